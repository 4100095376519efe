//! Recurring jobs: a cron expression (UTC) that enqueues a job at each
//! firing, once across every replica running the schedule. Each replica
//! computes the same firing times; the store lets exactly one of them
//! claim each firing ([`super::JobStore::claim_firing`]), and that one
//! enqueues the job, keyed `schedule:<name>:<firing ms>`.
//!
//! What this does not promise: firings while no replica runs are skipped,
//! not caught up (a daily digest missed at 09:00 waits for tomorrow), and a
//! replica that dies between claiming a firing and enqueueing its job
//! loses that one firing.

use std::str::FromStr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::engine::JobQueue;
use super::model::{JobError, NewJob, now_ms};

/// A named cron schedule and the job it enqueues.
pub struct Schedule {
    pub name: String,
    cron: cron::Schedule,
    job: NewJob,
}

impl Schedule {
    /// `expression`: cron's five fields (`0 9 * * *`: daily at 09:00 UTC),
    /// or six with seconds first (`*/10 * * * * *`).
    pub fn new(name: impl Into<String>, expression: &str, job: NewJob) -> Result<Self, JobError> {
        let fields = expression.split_whitespace().count();
        let full = if fields == 5 {
            format!("0 {expression}")
        } else {
            expression.to_owned()
        };
        let cron = cron::Schedule::from_str(&full).map_err(|e| {
            JobError::Invalid(format!(
                "schedule {expression:?} is not a cron expression: {e}"
            ))
        })?;
        Ok(Self {
            name: name.into(),
            cron,
            job,
        })
    }

    /// The next firing after now, in ms since the epoch.
    fn next_firing(&self) -> Option<i64> {
        self.cron
            .after(&chrono::Utc::now())
            .next()
            .map(|at| at.timestamp_millis())
    }
}

/// Fires `schedule` until `stop`.
pub(super) async fn run(queue: JobQueue, schedule: Schedule, stop: CancellationToken) {
    loop {
        let Some(firing) = schedule.next_firing() else {
            tracing::info!(schedule = schedule.name, "schedule has no more firings");
            return;
        };
        let wait = Duration::from_millis(u64::try_from(firing - now_ms()).unwrap_or(0));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        fire(&queue, &schedule, firing, &stop).await;
    }
}

async fn fire(queue: &JobQueue, schedule: &Schedule, firing: i64, stop: &CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    // Claimed once; the enqueue is tried until it lands or the schedule
    // stops, so a broker outage delays the firing rather than dropping it.
    let mut claimed = false;
    loop {
        if !claimed {
            match queue.store().claim_firing(&schedule.name, firing).await {
                Ok(true) => claimed = true,
                // Another replica has it.
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, schedule = schedule.name, "cannot claim a firing");
                }
            }
        }
        if claimed {
            let job = schedule
                .job
                .clone()
                .unique(format!("schedule:{}:{firing}", schedule.name));
            match queue.enqueue(job).await {
                Ok(_) => {
                    metrics::counter!("jobs_schedule_firings_total", "schedule" => schedule.name.clone())
                        .increment(1);
                    return;
                }
                Err(JobError::Invalid(reason)) => {
                    tracing::error!(
                        reason,
                        schedule = schedule.name,
                        "a schedule's job is invalid"
                    );
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, schedule = schedule.name, "cannot enqueue a firing yet");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
