//! Where jobs' records live: the truth about every job (its payload,
//! state, attempts and last error), which the message queue only carries
//! ids for. Every transition names the attempt it ends, so a worker whose
//! run was taken over (its broker connection died, the job was delivered
//! again) cannot overwrite the newer run's outcome.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::model::{JobError, JobId, JobRecord, JobState};

/// What storing a new job did.
#[derive(Clone, Debug, PartialEq)]
pub enum Inserted {
    New,
    /// A pending job holds the unique key.
    Existing(JobRecord),
}

/// What [`JobStore::withdraw`] makes of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Withdraw {
    Delete,
    Dead { error: String },
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Runs again at `run_at_ms`.
    Retry {
        run_at_ms: i64,
        error: String,
    },
    Dead {
        error: String,
    },
    /// Stopped by a shutdown before it finished: queued again, the
    /// attempt not counted.
    Released,
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Short name for logs and metrics (`memory`, `postgres`, `sqlite`).
    fn backend(&self) -> &'static str;

    /// Stores `job`, unless a pending job holds its unique key: that job
    /// is returned instead and nothing is stored.
    async fn insert(&self, job: &JobRecord) -> Result<Inserted, JobError>;

    /// Takes back a job whose announcement failed, as long as it is still
    /// queued and has never started (the broker may have confirmed late,
    /// and a worker already taken it): deleted, or made dead with `error`
    /// (an operator's retry that could not be announced). False when the
    /// job had moved on, which means it was announced after all.
    async fn withdraw(&self, id: JobId, to: Withdraw) -> Result<bool, JobError>;

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, JobError>;

    /// Jobs in `state` (every state when `None`), oldest first, starting
    /// after `after`, at most `limit`.
    async fn list(
        &self,
        state: Option<JobState>,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError>;

    /// Starts a run: a queued or retrying job becomes running with one
    /// more attempt. With `takeover`, a running job too (delivered again
    /// because the worker that ran it is gone). `None` when the job is not
    /// to run: finished, discarded, running elsewhere, or unknown.
    async fn start(
        &self,
        id: JobId,
        takeover: bool,
        now_ms: i64,
    ) -> Result<Option<JobRecord>, JobError>;

    /// Ends run `attempt` with `outcome`; false when that run is no longer
    /// the job's current one (nothing changes).
    async fn finish(
        &self,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
        now_ms: i64,
    ) -> Result<bool, JobError>;

    /// A dead job queued again with its attempts reset; `None` unless it
    /// was dead.
    async fn revive(&self, id: JobId, now_ms: i64) -> Result<Option<JobRecord>, JobError>;

    /// A job that has not run to its end (dead, queued or retrying) set
    /// aside for good; false otherwise.
    async fn discard(&self, id: JobId, now_ms: i64) -> Result<bool, JobError>;

    /// How many jobs are in each state.
    async fn counts(&self) -> Result<Vec<(JobState, u64)>, JobError>;

    /// Pending jobs (queued, retrying, running), oldest first, after
    /// `after`: what an in-process queue hands out again after a restart.
    async fn pending(&self, after: Option<JobId>, limit: usize)
    -> Result<Vec<JobRecord>, JobError>;

    /// Queued or retrying jobs due before `before_ms` and untouched since
    /// then, oldest first: what a lost message (a queue deleted, a broker
    /// failover that lost it, a crash between store and publish) left
    /// behind, for the sweeper to announce again. Each one returned is
    /// marked touched at `now_ms`, so it comes back only after another
    /// such wait.
    async fn overdue(
        &self,
        before_ms: i64,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError>;

    /// Claims firing `firing_ms` of schedule `name`: true for exactly one
    /// caller per firing, whichever replica asks first; false for earlier
    /// or equal firings once a later one is claimed.
    async fn claim_firing(&self, name: &str, firing_ms: i64) -> Result<bool, JobError>;

    /// Deletes finished jobs (succeeded, discarded, dead) last changed
    /// before `before_ms`; how many.
    async fn prune(&self, before_ms: i64) -> Result<u64, JobError>;
}

/// Jobs in this process's memory: the embedded default, gone with the
/// process. Bounded: beyond `capacity` jobs an enqueue is refused (prune
/// frees room).
pub struct MemoryJobStore {
    capacity: usize,
    inner: Mutex<Jobs>,
}

#[derive(Default)]
struct Jobs {
    by_id: HashMap<JobId, JobRecord>,
    /// Unique keys of pending jobs.
    by_key: HashMap<String, JobId>,
    /// Each schedule's last claimed firing.
    firings: HashMap<String, i64>,
}

/// Jobs a memory store keeps by default.
pub const MEMORY_CAPACITY: usize = 100_000;

impl Default for MemoryJobStore {
    fn default() -> Self {
        Self::with_capacity(MEMORY_CAPACITY)
    }
}

impl MemoryJobStore {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Jobs::default()),
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Jobs {
    /// Sets a job's state, keeping the unique-key index in step.
    fn set_state(&mut self, id: JobId, state: JobState, now_ms: i64) {
        let Some(job) = self.by_id.get_mut(&id) else {
            return;
        };
        job.state = state;
        job.updated_at_ms = now_ms;
        if !state.is_pending()
            && let Some(key) = &job.unique_key
            && self.by_key.get(key) == Some(&id)
        {
            self.by_key.remove(key);
        }
    }

    fn sorted(
        &self,
        filter: impl Fn(&JobRecord) -> bool,
        after: Option<JobId>,
        limit: usize,
    ) -> Vec<JobRecord> {
        let mut jobs: Vec<&JobRecord> = self
            .by_id
            .values()
            .filter(|j| filter(j) && after.is_none_or(|after| j.id > after))
            .collect();
        jobs.sort_unstable_by_key(|j| j.id);
        jobs.into_iter().take(limit).cloned().collect()
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn insert(&self, job: &JobRecord) -> Result<Inserted, JobError> {
        let mut jobs = self.jobs();
        if let Some(key) = &job.unique_key
            && let Some(existing) = jobs.by_key.get(key).and_then(|id| jobs.by_id.get(id))
        {
            return Ok(Inserted::Existing(existing.clone()));
        }
        if jobs.by_id.len() >= self.capacity {
            return Err(JobError::Unavailable(format!(
                "the in-process job store holds {} jobs, its limit",
                self.capacity
            )));
        }
        if let Some(key) = &job.unique_key {
            jobs.by_key.insert(key.clone(), job.id);
        }
        jobs.by_id.insert(job.id, job.clone());
        Ok(Inserted::New)
    }

    async fn withdraw(&self, id: JobId, to: Withdraw) -> Result<bool, JobError> {
        let mut jobs = self.jobs();
        let untouched = jobs
            .by_id
            .get(&id)
            .is_some_and(|j| j.state == JobState::Queued && j.attempts == 0);
        if !untouched {
            return Ok(false);
        }
        match to {
            Withdraw::Delete => {
                if let Some(job) = jobs.by_id.remove(&id)
                    && let Some(key) = job.unique_key
                    && jobs.by_key.get(&key) == Some(&id)
                {
                    jobs.by_key.remove(&key);
                }
            }
            Withdraw::Dead { error } => {
                if let Some(job) = jobs.by_id.get_mut(&id) {
                    job.last_error = Some(error);
                }
                jobs.set_state(id, JobState::Dead, super::model::now_ms());
            }
        }
        Ok(true)
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, JobError> {
        Ok(self.jobs().by_id.get(&id).cloned())
    }

    async fn list(
        &self,
        state: Option<JobState>,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError> {
        Ok(self
            .jobs()
            .sorted(|j| state.is_none_or(|s| j.state == s), after, limit))
    }

    async fn start(
        &self,
        id: JobId,
        takeover: bool,
        now_ms: i64,
    ) -> Result<Option<JobRecord>, JobError> {
        let mut jobs = self.jobs();
        let Some(job) = jobs.by_id.get_mut(&id) else {
            return Ok(None);
        };
        let runnable = match job.state {
            JobState::Queued | JobState::Retrying => true,
            JobState::Running => takeover,
            _ => false,
        };
        if !runnable {
            return Ok(None);
        }
        job.state = JobState::Running;
        job.attempts += 1;
        job.updated_at_ms = now_ms;
        Ok(Some(job.clone()))
    }

    async fn finish(
        &self,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
        now_ms: i64,
    ) -> Result<bool, JobError> {
        let mut jobs = self.jobs();
        let Some(job) = jobs.by_id.get_mut(&id) else {
            return Ok(false);
        };
        if job.state != JobState::Running || job.attempts != attempt {
            return Ok(false);
        }
        let state = match outcome {
            Outcome::Succeeded => JobState::Succeeded,
            Outcome::Retry { run_at_ms, error } => {
                job.run_at_ms = run_at_ms;
                job.last_error = Some(error);
                JobState::Retrying
            }
            Outcome::Dead { error } => {
                job.last_error = Some(error);
                JobState::Dead
            }
            Outcome::Released => {
                job.attempts -= 1;
                JobState::Queued
            }
        };
        jobs.set_state(id, state, now_ms);
        Ok(true)
    }

    async fn revive(&self, id: JobId, now_ms: i64) -> Result<Option<JobRecord>, JobError> {
        let mut jobs = self.jobs();
        let Some(job) = jobs.by_id.get(&id) else {
            return Ok(None);
        };
        if job.state != JobState::Dead {
            return Ok(None);
        }
        // Its key may have been taken by a newer job meanwhile: then the
        // revived job runs without it.
        let key = job.unique_key.clone();
        let keep_key = key.as_ref().is_some_and(|k| !jobs.by_key.contains_key(k));
        let Some(job) = jobs.by_id.get_mut(&id) else {
            return Ok(None);
        };
        job.state = JobState::Queued;
        job.attempts = 0;
        job.run_at_ms = now_ms;
        job.updated_at_ms = now_ms;
        if !keep_key {
            job.unique_key = None;
        }
        let revived = job.clone();
        if let (true, Some(key)) = (keep_key, key) {
            jobs.by_key.insert(key, id);
        }
        Ok(Some(revived))
    }

    async fn discard(&self, id: JobId, now_ms: i64) -> Result<bool, JobError> {
        let mut jobs = self.jobs();
        let discardable = jobs.by_id.get(&id).is_some_and(|j| {
            matches!(
                j.state,
                JobState::Dead | JobState::Queued | JobState::Retrying
            )
        });
        if discardable {
            jobs.set_state(id, JobState::Discarded, now_ms);
        }
        Ok(discardable)
    }

    async fn counts(&self) -> Result<Vec<(JobState, u64)>, JobError> {
        let jobs = self.jobs();
        let mut counts: HashMap<JobState, u64> = HashMap::new();
        for job in jobs.by_id.values() {
            *counts.entry(job.state).or_default() += 1;
        }
        Ok(JobState::ALL
            .into_iter()
            .map(|s| (s, counts.get(&s).copied().unwrap_or(0)))
            .collect())
    }

    async fn pending(
        &self,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError> {
        Ok(self.jobs().sorted(|j| j.state.is_pending(), after, limit))
    }

    async fn overdue(
        &self,
        before_ms: i64,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError> {
        let mut jobs = self.jobs();
        let found = jobs.sorted(
            |j| {
                matches!(j.state, JobState::Queued | JobState::Retrying)
                    && j.run_at_ms < before_ms
                    && j.updated_at_ms < before_ms
            },
            None,
            limit,
        );
        for job in &found {
            if let Some(stored) = jobs.by_id.get_mut(&job.id) {
                stored.updated_at_ms = now_ms;
            }
        }
        Ok(found)
    }

    async fn claim_firing(&self, name: &str, firing_ms: i64) -> Result<bool, JobError> {
        let mut jobs = self.jobs();
        let last = jobs.firings.entry(name.to_owned()).or_insert(i64::MIN);
        if *last >= firing_ms {
            return Ok(false);
        }
        *last = firing_ms;
        Ok(true)
    }

    async fn prune(&self, before_ms: i64) -> Result<u64, JobError> {
        let mut jobs = self.jobs();
        let before = jobs.by_id.len();
        jobs.by_id.retain(|_, j| {
            !(matches!(
                j.state,
                JobState::Succeeded | JobState::Discarded | JobState::Dead
            ) && j.updated_at_ms < before_ms)
        });
        Ok((before - jobs.by_id.len()) as u64)
    }
}
