//! What a job is: the seed's `Job{id, type, payload, status, error}`, with
//! the attempts, times and key that make it durable and retryable.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Time-ordered (UUIDv7), so listings come out in enqueue order.
pub type JobId = uuid::Uuid;

/// Payloads are JSON of at most this many bytes by default; bigger data
/// belongs in a store the job names.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Attempts a job gets unless it asks for others.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its run time or for a worker.
    Queued,
    Running,
    /// Failed; runs again at `run_at`.
    Retrying,
    Succeeded,
    /// Failed `max_attempts` times, or could never succeed; `last_error`
    /// says why. Retried or discarded by an operator.
    Dead,
    Discarded,
}

impl JobState {
    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Dead,
        Self::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Discarded => "discarded",
        }
    }

    /// Whether the job still holds its unique key (it may yet run).
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Queued | Self::Running | Self::Retrying)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// A job as stored: what it is, and where it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    /// Which handler runs it (the seed's `type`).
    pub kind: String,
    pub payload: serde_json::Value,
    pub state: JobState,
    /// Runs started so far.
    pub attempts: u32,
    pub max_attempts: u32,
    /// When it may run next (queued or retrying), in ms since the epoch.
    pub run_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// When a new job may first run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunAt {
    #[default]
    Now,
    At(SystemTime),
    After(Duration),
}

/// A job to enqueue.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub kind: String,
    pub payload: serde_json::Value,
    pub run_at: RunAt,
    /// While a job with this key is pending, enqueueing the key again
    /// returns that job instead of making another.
    pub unique_key: Option<String>,
    pub max_attempts: u32,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            run_at: RunAt::Now,
            unique_key: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// `payload` as JSON.
    pub fn json<T: Serialize>(kind: impl Into<String>, payload: &T) -> Result<Self, JobError> {
        let payload = serde_json::to_value(payload)
            .map_err(|e| JobError::Invalid(format!("the payload is not JSON: {e}")))?;
        Ok(Self::new(kind, payload))
    }

    pub fn run_at(mut self, run_at: RunAt) -> Self {
        self.run_at = run_at;
        self
    }

    pub fn unique(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }
}

/// What an enqueue did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    New(JobId),
    /// A pending job already had the unique key: this is that job.
    Existing(JobId),
}

impl Enqueued {
    pub fn id(self) -> JobId {
        match self {
            Self::New(id) | Self::Existing(id) => id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job can never be accepted as given (bad kind, payload too big).
    #[error("invalid job: {0}")]
    Invalid(String),
    /// The broker or the store did not answer in time; nothing was
    /// enqueued.
    #[error("the job queue is unavailable: {0}")]
    Unavailable(String),
    #[error("the job store failed")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

pub fn to_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}
