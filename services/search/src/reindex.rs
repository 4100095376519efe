//! Rebuilding the index from the source of truth: the users service's
//! event log.
//!
//! An operator asks (`POST /admin/search/reindex` on the admin listener);
//! the request enqueues a `search.reindex` job on the common job queue
//! under a unique key, so a second request while one is pending or running
//! answers 409. The job takes the `search.reindex` lock (Redis, shared by
//! the replicas) so that one replica rebuilds at a time, and its fencing
//! token names the new generation: a holder that lost the lock cannot
//! publish over a newer one ([`IndexError::Fenced`]).
//!
//! The job replays the log from the start into a new generation while the
//! consumer keeps the live index current (and, on this replica, writes the
//! new generation too), publishes it in one step, then replays the events
//! logged meanwhile into it: an event another replica consumed before the
//! swap reaches the new generation through that second replay, so nothing
//! written during a rebuild is lost. Writes are versioned, so what arrives
//! twice changes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::jobs::{Enqueued, JobFailure, JobId, JobRecord, NewJob};

use crate::App;
use crate::document::{Change, change};
use crate::index::{Generation, IndexError};
use crate::users::Export;

pub const JOB_KIND: &str = "search.reindex";
pub const LOCK: &str = "search.reindex";
/// Extended in the background while the job runs; a replica that dies
/// holding it frees it after this long.
const LEASE: Duration = Duration::from_secs(30);
/// Changes written per commit while rebuilding.
const BATCH: usize = 1000;
/// How far before the rebuild's last position the catch-up starts: log
/// positions are taken at insert and transactions commit out of order, so
/// an event numbered below the last one read may commit after it.
/// Replaying the overlap again changes nothing.
const CATCH_UP_MARGIN: u64 = 10_000;

/// What asking for a reindex did.
#[derive(Debug, PartialEq, Eq)]
pub enum Requested {
    Queued(JobId),
    /// One is pending or running already (this job, if known here).
    AlreadyRunning(Option<JobId>),
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot enqueue the reindex")]
    Jobs(#[from] common::jobs::JobError),
    #[error("cannot ask the lock service whether a reindex runs")]
    Lock(#[from] common::lock::LockError),
}

/// Enqueues a reindex unless one is pending, here or (by the lock) on any
/// replica.
pub async fn request(app: &App) -> Result<Requested, RequestError> {
    // Held: a replica is rebuilding now.
    match app
        .locks
        .try_acquire(LOCK, Duration::from_millis(10))
        .await?
    {
        None => return Ok(Requested::AlreadyRunning(None)),
        Some(probe) => {
            let _ = probe.release().await;
        }
    }
    let job = NewJob::new(JOB_KIND, serde_json::json!({}))
        .unique(JOB_KIND)
        .max_attempts(3);
    Ok(match app.jobs.enqueue(job).await? {
        Enqueued::New(id) => Requested::Queued(id),
        Enqueued::Existing(id) => Requested::AlreadyRunning(Some(id)),
    })
}

fn changes_of(events: &[platform_proto::users::v1::StoredEvent]) -> Vec<Change> {
    events
        .iter()
        .filter_map(|event| {
            let at =
                crate::document::time_ms(&event.occurred_at).unwrap_or_else(common::jobs::now_ms);
            change(
                &event.event_type,
                event.payload.as_bytes(),
                event.version,
                at,
            )
            .ok()
        })
        .collect()
}

/// Reads `export` to its end, writing each batch with `write`; the last
/// position read (or `after` if none).
async fn replay<W, F>(
    mut export: Export,
    after: u64,
    held: &common::lock::LockGuard,
    mut write: W,
) -> Result<(u64, u64), JobFailure>
where
    W: FnMut(Vec<Change>) -> F,
    F: std::future::Future<Output = Result<(), IndexError>>,
{
    let mut position = after;
    let mut written = 0u64;
    let mut events = Vec::with_capacity(BATCH);
    loop {
        let next = export.next().await.map_err(JobFailure::retry)?;
        let done = next.is_none();
        if let Some(event) = next {
            position = event.position;
            events.push(event);
        }
        if events.len() == BATCH || (done && !events.is_empty()) {
            if !held.is_held() {
                return Err(JobFailure::retry("the reindex lock was lost"));
            }
            let changes = changes_of(&events);
            written += changes.len() as u64;
            write(changes).await.map_err(JobFailure::retry)?;
            events.clear();
        }
        if done {
            return Ok((position, written));
        }
    }
}

/// The job.
pub async fn run(app: Arc<App>, _job: &JobRecord) -> Result<(), JobFailure> {
    let Some(guard) = app
        .locks
        .try_acquire(LOCK, LEASE)
        .await
        .map_err(JobFailure::retry)?
    else {
        // Another replica is rebuilding, or one that died still holds the
        // lease: try again later rather than call this done.
        metrics::counter!("search_reindex_runs_total", "outcome" => "lock_held").increment(1);
        return Err(JobFailure::retry("another replica holds the reindex lock"));
    };
    let started = Instant::now();
    let fencing = guard.fencing_token();
    let outcome = rebuild(&app, &guard, fencing).await;
    app.index.set_building(None);
    let label = match &outcome {
        Ok(_) => "published",
        Err(_) => "failed",
    };
    metrics::counter!("search_reindex_runs_total", "outcome" => label).increment(1);
    metrics::histogram!("search_reindex_duration_seconds").record(started.elapsed().as_secs_f64());
    let _ = guard.release().await;
    let (documents, caught_up) = outcome?;
    tracing::info!(
        fencing,
        documents,
        caught_up,
        seconds = started.elapsed().as_secs_f64(),
        "reindex published"
    );
    Ok(())
}

async fn rebuild(
    app: &App,
    guard: &common::lock::LockGuard,
    fencing: u64,
) -> Result<(u64, u64), JobFailure> {
    let generation: Arc<dyn Generation> =
        app.index
            .live()
            .begin_rebuild(fencing)
            .await
            .map_err(|e| match e {
                IndexError::Fenced { .. } => JobFailure::permanent(e),
                e => JobFailure::retry(e),
            })?;
    app.index.set_building(Some(generation.clone()));
    let built = async {
        let export = app
            .users
            .export_events(0)
            .await
            .map_err(JobFailure::retry)?;
        let gen_ref = generation.clone();
        let (position, documents) = replay(export, 0, guard, move |changes| {
            let generation = gen_ref.clone();
            async move { generation.apply(&changes).await }
        })
        .await?;
        if !guard.is_held() {
            return Err(JobFailure::retry("the reindex lock was lost"));
        }
        generation.publish().await.map_err(|e| match e {
            IndexError::Fenced { .. } => JobFailure::permanent(e),
            e => JobFailure::retry(e),
        })?;
        Ok((position, documents))
    }
    .await;
    let (position, documents) = match built {
        Ok(built) => built,
        Err(failure) => {
            app.index.set_building(None);
            if let Err(error) = generation.abandon().await {
                tracing::warn!(%error, "cannot remove an unpublished generation");
            }
            return Err(failure);
        }
    };
    app.index.set_building(None);
    metrics::counter!("search_documents_indexed_total", "source" => "reindex").increment(documents);
    // What was logged while the generation was built.
    let export = app
        .users
        .export_events(position.saturating_sub(CATCH_UP_MARGIN))
        .await
        .map_err(JobFailure::retry)?;
    let index = &app.index;
    let (_, caught_up) = replay(export, position, guard, |changes| async move {
        index.apply(&changes).await
    })
    .await?;
    Ok((documents, caught_up))
}
