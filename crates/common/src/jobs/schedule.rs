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
    /// `expression`: cron's five fields (`0 9 * * 1-5`: weekdays at 09:00
    /// UTC, Sunday 0 or 7), or the `cron` crate's six with seconds first
    /// (`*/10 * * * * *`, whose weekdays are best written as names).
    pub fn new(name: impl Into<String>, expression: &str, job: NewJob) -> Result<Self, JobError> {
        let name = name.into();
        // Its firings' unique keys, `schedule:<name>:<ms>`, stay within a
        // unique key's 255 bytes.
        if name.is_empty() || name.len() > 200 || name.contains('\0') {
            return Err(JobError::Invalid(
                "a schedule's name is 1 to 200 bytes, without NUL".into(),
            ));
        }
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let full = match fields.as_slice() {
            [minute, hour, day, month, weekday] => {
                format!("0 {minute} {hour} {day} {month} {}", weekday_names(weekday))
            }
            _ => expression.to_owned(),
        };
        let cron = cron::Schedule::from_str(&full).map_err(|e| {
            JobError::Invalid(format!(
                "schedule {expression:?} is not a cron expression: {e}"
            ))
        })?;
        Ok(Self { name, cron, job })
    }

    /// The next firing after now, in ms since the epoch.
    fn next_firing(&self) -> Option<i64> {
        self.cron
            .after(&chrono::Utc::now())
            .next()
            .map(|at| at.timestamp_millis())
    }
}

/// Day-of-week numbers as cron writes them (0 or 7 Sunday, 1 Monday … 6
/// Saturday) turned into names, which the `cron` crate reads the same way
/// (its own numbers start at 1 for Sunday, so `1` would be read as Sunday).
fn weekday_names(field: &str) -> String {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let mut out = String::with_capacity(field.len() * 2);
    let mut chars = field.chars().peekable();
    let mut after_slash = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() && !after_slash {
            let mut number = String::from(c);
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                number.push(d);
                chars.next();
            }
            match number.parse::<usize>().ok().and_then(|n| NAMES.get(n)) {
                Some(name) => out.push_str(name),
                // Out of range: left for the parser to refuse.
                None => out.push_str(&number),
            }
            continue;
        }
        // A step (`*/2`) is a count, not a day.
        after_slash = c == '/' || (after_slash && c.is_ascii_digit());
        out.push(c);
    }
    out
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{Datelike, Timelike, Weekday};

    use super::*;

    fn next(expression: &str) -> chrono::DateTime<chrono::Utc> {
        let schedule =
            Schedule::new("t", expression, NewJob::new("t", serde_json::json!(null))).unwrap();
        schedule.cron.upcoming(chrono::Utc).next().unwrap()
    }

    #[test]
    fn weekdays_are_numbered_as_cron_numbers_them() {
        assert_eq!(next("0 9 * * 1").weekday(), Weekday::Mon);
        assert_eq!(next("0 9 * * 0").weekday(), Weekday::Sun);
        assert_eq!(next("0 9 * * 7").weekday(), Weekday::Sun);
        assert_eq!(next("30 9 * * 6").weekday(), Weekday::Sat);
        for _ in 0..3 {
            let at = next("0 9 * * 1-5");
            assert!(!matches!(at.weekday(), Weekday::Sat | Weekday::Sun), "{at}");
            assert_eq!((at.hour(), at.minute(), at.second()), (9, 0, 0));
        }
        assert_eq!(weekday_names("*/2"), "*/2");
        assert_eq!(weekday_names("1-5/2"), "MON-FRI/2");
        assert_eq!(weekday_names("0,6"), "SUN,SAT");
    }

    #[test]
    fn a_long_or_empty_schedule_name_is_refused() {
        let job = || NewJob::new("t", serde_json::json!(null));
        assert!(Schedule::new("", "* * * * *", job()).is_err());
        assert!(Schedule::new("x".repeat(201), "* * * * *", job()).is_err());
    }
}
