//! Hands the outbox's deliveries to the job queue: one job per delivery,
//! keyed by its id, so a delivery claimed twice (a lease run out while
//! its relay was slow) is still one pending job.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use common::jobs::NewJob;

use super::JOB_KIND;
use crate::App;

/// Deliveries claimed per pass.
const BATCH: u32 = 100;
/// How long a claim keeps other relays off a delivery.
const LEASE_MS: i64 = 30_000;
/// How often the outbox is read without being woken (another replica's
/// notifications, claims run out, re-sends).
const POLL: Duration = Duration::from_secs(1);

/// The job that carries one delivery.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub delivery: String,
    /// Which send of it (a re-send is the next).
    #[serde(default)]
    pub generation: i64,
}

/// How often finished deliveries past `WEBHOOK_RETENTION` are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Relays until `stop`.
pub async fn run(app: Arc<App>, stop: CancellationToken) {
    let mut pause = Duration::from_millis(100);
    let mut pruned = tokio::time::Instant::now();
    loop {
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = tokio::time::Instant::now();
            prune(&app).await;
        }
        match pass(&app).await {
            // A full batch: more may be waiting.
            Ok(n) if n == BATCH as usize && !stop.is_cancelled() => continue,
            Ok(_) => pause = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(%error, "cannot hand webhook deliveries to the job queue yet");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = app.webhook_wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn prune(app: &App) {
    let retention = i64::try_from(app.webhooks.retention.as_millis()).unwrap_or(i64::MAX);
    match app
        .store
        .prune_deliveries(crate::store::now_ms().saturating_sub(retention))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::debug!(n, "pruned finished webhook deliveries"),
        Err(error) => {
            tracing::warn!(error = %common::exit::chain(&error), "cannot prune webhook deliveries");
        }
    }
}

/// One pass over the outbox: how many deliveries it claimed.
async fn pass(app: &App) -> Result<usize, String> {
    let claimed = app
        .store
        .claim_unqueued(BATCH, LEASE_MS)
        .await
        .map_err(|e| common::exit::chain(&e))?;
    for (delivery, generation) in &claimed {
        let job = NewJob::json(
            JOB_KIND,
            &Job {
                delivery: delivery.clone(),
                generation: *generation,
            },
        )
        .map_err(|e| e.to_string())?
        .unique(format!("webhook:{delivery}:{generation}"))
        .max_attempts(app.webhooks.max_attempts);
        match app.jobs.enqueue(job).await {
            Ok(_) => {
                app.store
                    .set_queued(delivery, true)
                    .await
                    .map_err(|e| common::exit::chain(&e))?;
            }
            Err(error) => {
                // Back to the outbox at once rather than after the lease.
                let _ = app.store.set_queued(delivery, false).await;
                return Err(error.to_string());
            }
        }
    }
    Ok(claimed.len())
}
