//! Group commit for the job store's hot statements. Under load many
//! workers start and finish jobs at once, each a one-row statement and a
//! commit; here concurrent calls queue up and one task runs whatever has
//! queued as one statement (one commit), then the next lot. A call alone
//! runs at once — no timer, no added wait — so batching costs nothing at
//! low load and saves a round trip and a commit per row at high load.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

/// Rows one statement carries at most (each binds a handful of
/// parameters, far below PostgreSQL's and SQLite's limits).
pub(super) const MAX_BATCH: usize = 128;
/// Calls that may wait for a batch; a full queue makes callers wait.
const QUEUE: usize = 4096;

pub(super) type Reply<R> = oneshot::Sender<Result<R, Arc<sqlx::Error>>>;
type Run<Q, R> =
    fn(AnyPool, Vec<Q>) -> Pin<Box<dyn Future<Output = Result<Vec<R>, sqlx::Error>> + Send>>;

/// One kind of statement, batched: `run` gets the queued requests and
/// answers each, in order.
pub(super) struct Batcher<Q, R> {
    tx: mpsc::Sender<(Q, Reply<R>)>,
}

impl<Q: Send + 'static, R: Send + 'static> Batcher<Q, R> {
    /// Runs on the calling runtime until the batcher is dropped.
    pub(super) fn spawn(pool: AnyPool, run: Run<Q, R>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Q, Reply<R>)>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (requests, replies): (Vec<Q>, Vec<Reply<R>>) = batch.drain(..).unzip();
                metrics::histogram!("jobs_store_batch_rows").record(requests.len() as f64);
                match run(pool.clone(), requests).await {
                    Ok(answers) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Err(error) => {
                        let error = Arc::new(error);
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queues `request` and waits for its answer.
    pub(super) async fn call(&self, request: Q) -> Result<R, Arc<sqlx::Error>> {
        let (reply, answer) = oneshot::channel();
        let closed = || Arc::new(sqlx::Error::PoolClosed);
        self.tx.send((request, reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// `$first, $first+1, …` for `count` parameters, as a comma-separated list.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
