//! The seed's `MessageQueue` (Publish/Consume): what carries jobs to
//! workers. It carries only a job's id, kind and run time; the record is
//! in the [`super::store::JobStore`]. Two backends: RabbitMQ
//! ([`super::rabbitmq`], feature `rabbitmq`) and [`InProcessQueue`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::model::{JobError, JobId};

/// A queue message: which job, and when it is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub id: JobId,
    pub kind: String,
    pub run_at_ms: i64,
}

/// One message handed to a worker, settled exactly once: acked, requeued
/// or rejected. One dropped unsettled is requeued, as a broker does for a
/// consumer that goes away.
pub struct Delivery {
    /// `Err` with the reason for a body that is not a job message.
    pub message: Result<JobMessage, String>,
    /// Delivered before to a consumer that went away without settling it.
    pub redelivered: bool,
    pub acker: Box<dyn Acker>,
}

#[async_trait]
pub trait Acker: Send {
    /// Done with: the queue forgets it.
    async fn ack(self: Box<Self>) -> Result<(), JobError>;
    /// Back to the queue, for another delivery.
    async fn requeue(self: Box<Self>) -> Result<(), JobError>;
    /// To the dead-letter queue, never delivered again.
    async fn reject(self: Box<Self>) -> Result<(), JobError>;
}

/// A consumer's stream of deliveries.
#[async_trait]
pub trait Deliveries: Send {
    /// The next delivery; waits for one. Recovers from broker outages on
    /// its own; `None` only once the queue is closed for good.
    async fn next(&mut self) -> Option<Delivery>;

    /// Asks for no more deliveries; those already handed out can still be
    /// settled, until the stream is dropped.
    async fn stop(&mut self) {}
}

#[async_trait]
pub trait MessageQueue: Send + Sync + 'static {
    /// Short name for logs and metrics (`rabbitmq`, `in_process`).
    fn backend(&self) -> &'static str;

    /// Sends `message`, delivered once `delay` has passed. Returns only
    /// once the queue has it durably (a broker's confirm).
    async fn publish(&self, message: &JobMessage, delay: Duration) -> Result<(), JobError>;

    /// Deliveries of `kind`'s jobs, at most `prefetch` unsettled at once.
    async fn consume(&self, kind: &str, prefetch: usize) -> Result<Box<dyn Deliveries>, JobError>;

    /// Messages of `kind` ready for a worker.
    async fn depth(&self, kind: &str) -> Result<u64, JobError>;
}

/// Messages an in-process queue holds by default, ready and delayed.
pub const IN_PROCESS_CAPACITY: usize = 100_000;

/// The embedded queue: messages in this process's memory, delayed ones in
/// a timer heap that consumers drain as they wait. Bounded: beyond its
/// capacity a publish is refused.
pub struct InProcessQueue {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    state: Mutex<State>,
    /// Woken when something may have become ready.
    wake: Notify,
}

#[derive(Default)]
struct State {
    ready: HashMap<String, VecDeque<(JobMessage, bool)>>,
    delayed: BinaryHeap<Reverse<(Instant, u64, Timed)>>,
    seq: u64,
    len: usize,
}

/// A delayed message; ordered by the heap's (due, seq) before this.
#[derive(PartialEq, Eq)]
struct Timed(JobMessage);

impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timed {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl State {
    /// Moves due messages to their ready queues; when the next is due.
    fn promote(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse((due, _, _))) = self.delayed.peek() {
            if *due > now {
                return Some(*due);
            }
            if let Some(Reverse((_, _, Timed(message)))) = self.delayed.pop() {
                self.ready
                    .entry(message.kind.clone())
                    .or_default()
                    .push_back((message, false));
            }
        }
        None
    }
}

impl Default for InProcessQueue {
    fn default() -> Self {
        Self::with_capacity(IN_PROCESS_CAPACITY)
    }
}

impl InProcessQueue {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                capacity,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
            }),
        }
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push_front(&self, message: JobMessage) {
        let mut state = self.state();
        state
            .ready
            .entry(message.kind.clone())
            .or_default()
            .push_front((message, true));
        drop(state);
        self.wake.notify_waiters();
    }

    fn forget(&self) {
        let mut state = self.state();
        state.len = state.len.saturating_sub(1);
    }
}

#[async_trait]
impl MessageQueue for InProcessQueue {
    fn backend(&self) -> &'static str {
        "in_process"
    }

    async fn publish(&self, message: &JobMessage, delay: Duration) -> Result<(), JobError> {
        let mut state = self.shared.state();
        if state.len >= self.shared.capacity {
            return Err(JobError::Unavailable(format!(
                "the in-process queue holds {} messages, its limit",
                self.shared.capacity
            )));
        }
        state.len += 1;
        if delay.is_zero() {
            state
                .ready
                .entry(message.kind.clone())
                .or_default()
                .push_back((message.clone(), false));
        } else {
            state.seq += 1;
            let seq = state.seq;
            state.delayed.push(Reverse((
                Instant::now() + delay,
                seq,
                Timed(message.clone()),
            )));
        }
        drop(state);
        self.shared.wake.notify_waiters();
        Ok(())
    }

    async fn consume(&self, kind: &str, prefetch: usize) -> Result<Box<dyn Deliveries>, JobError> {
        Ok(Box::new(InProcessDeliveries {
            shared: self.shared.clone(),
            kind: kind.to_owned(),
            unsettled: Arc::new(Semaphore::new(prefetch.max(1))),
        }))
    }

    async fn depth(&self, kind: &str) -> Result<u64, JobError> {
        let mut state = self.shared.state();
        state.promote(Instant::now());
        Ok(state.ready.get(kind).map_or(0, |q| q.len() as u64))
    }
}

struct InProcessDeliveries {
    shared: Arc<Shared>,
    kind: String,
    unsettled: Arc<Semaphore>,
}

#[async_trait]
impl Deliveries for InProcessDeliveries {
    async fn next(&mut self) -> Option<Delivery> {
        let permit = self.unsettled.clone().acquire_owned().await.ok()?;
        loop {
            // Registered before looking, so a publish in between wakes us.
            let woken = self.shared.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let next_due = {
                let mut state = self.shared.state();
                let next_due = state.promote(Instant::now());
                if let Some((message, redelivered)) = state
                    .ready
                    .get_mut(&self.kind)
                    .and_then(VecDeque::pop_front)
                {
                    return Some(Delivery {
                        message: Ok(message.clone()),
                        redelivered,
                        acker: Box::new(InProcessAcker {
                            shared: self.shared.clone(),
                            message: Some(message),
                            _permit: permit,
                        }),
                    });
                }
                next_due
            };
            match next_due {
                Some(due) => {
                    tokio::select! {
                        () = woken => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                None => woken.await,
            }
        }
    }
}

struct InProcessAcker {
    shared: Arc<Shared>,
    /// Taken when settled; still here on drop means requeue.
    message: Option<JobMessage>,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Acker for InProcessAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), JobError> {
        if self.message.take().is_some() {
            self.shared.forget();
        }
        Ok(())
    }

    async fn requeue(mut self: Box<Self>) -> Result<(), JobError> {
        if let Some(message) = self.message.take() {
            self.shared.push_front(message);
        }
        Ok(())
    }

    async fn reject(mut self: Box<Self>) -> Result<(), JobError> {
        // In process the store's dead record is the dead-letter queue.
        if self.message.take().is_some() {
            self.shared.forget();
        }
        Ok(())
    }
}

impl Drop for InProcessAcker {
    fn drop(&mut self) {
        if let Some(message) = self.message.take() {
            self.shared.push_front(message);
        }
    }
}

/// A queue shared by several services (the all-in-one runner's in-process
/// queue) as one of them sees it: its kinds are `<namespace>.<kind>`
/// underneath, so two services that both run a `digest` job cannot take
/// each other's (the other's store would not know the job, and the
/// delivery would be dropped as a duplicate).
pub struct Namespaced {
    inner: Arc<dyn MessageQueue>,
    namespace: String,
}

impl Namespaced {
    pub fn new(inner: Arc<dyn MessageQueue>, namespace: impl Into<String>) -> Self {
        Self {
            inner,
            namespace: namespace.into(),
        }
    }

    fn outer(&self, kind: &str) -> String {
        format!("{}.{kind}", self.namespace)
    }
}

#[async_trait]
impl MessageQueue for Namespaced {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn publish(&self, message: &JobMessage, delay: Duration) -> Result<(), JobError> {
        let mut outer = message.clone();
        outer.kind = self.outer(&message.kind);
        self.inner.publish(&outer, delay).await
    }

    async fn consume(&self, kind: &str, prefetch: usize) -> Result<Box<dyn Deliveries>, JobError> {
        Ok(Box::new(NamespacedDeliveries {
            inner: self.inner.consume(&self.outer(kind), prefetch).await?,
            kind: kind.to_owned(),
        }))
    }

    async fn depth(&self, kind: &str) -> Result<u64, JobError> {
        self.inner.depth(&self.outer(kind)).await
    }
}

struct NamespacedDeliveries {
    inner: Box<dyn Deliveries>,
    kind: String,
}

#[async_trait]
impl Deliveries for NamespacedDeliveries {
    async fn next(&mut self) -> Option<Delivery> {
        let mut delivery = self.inner.next().await?;
        if let Ok(message) = &mut delivery.message {
            message.kind.clone_from(&self.kind);
        }
        Some(delivery)
    }

    async fn stop(&mut self) {
        self.inner.stop().await;
    }
}
