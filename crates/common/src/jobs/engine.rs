//! The seed's WorkerPool over any store and message queue: enqueueing,
//! workers per job type, retries with backoff, dead jobs, draining.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::model::{
    Enqueued, JobError, JobId, JobRecord, JobState, MAX_PAYLOAD_BYTES, NewJob, RunAt, now_ms, to_ms,
};
use super::schedule::Schedule;
use super::store::{Inserted, JobStore, Outcome, Withdraw};
use super::transport::{Delivery, JobMessage, MessageQueue};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    /// Worth another attempt (a peer timed out, a lock was taken).
    #[error("{0}")]
    Retry(String),
    /// Never going to succeed (the payload does not decode): dead at once.
    #[error("{0}")]
    Permanent(String),
}

impl JobFailure {
    pub fn retry(error: impl std::fmt::Display) -> Self {
        Self::Retry(error.to_string())
    }

    pub fn permanent(error: impl std::fmt::Display) -> Self {
        Self::Permanent(error.to_string())
    }
}

impl JobRecord {
    /// The payload as `T`; a payload that does not decode is a permanent
    /// failure (retrying cannot fix it).
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobFailure> {
        serde_json::from_value(self.payload.clone())
            .map_err(|e| JobFailure::Permanent(format!("the payload does not decode: {e}")))
    }
}

/// Runs one job type. A handler is called at least once per job (a run
/// cut short by a crash runs again), so its effect must be idempotent —
/// keyed by the job id, say.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn run(&self, job: &JobRecord) -> Result<(), JobFailure>;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A handler from an async closure.
pub fn handler_fn<F>(f: F) -> Arc<dyn Handler>
where
    F: Fn(JobRecord) -> BoxFuture<Result<(), JobFailure>> + Send + Sync + 'static,
{
    struct FnHandler<F>(F);
    #[async_trait]
    impl<F> Handler for FnHandler<F>
    where
        F: Fn(JobRecord) -> BoxFuture<Result<(), JobFailure>> + Send + Sync + 'static,
    {
        async fn run(&self, job: &JobRecord) -> Result<(), JobFailure> {
            (self.0)(job.clone()).await
        }
    }
    Arc::new(FnHandler(f))
}

/// Exponential backoff with jitter: the n-th retry waits between three
/// quarters and all of `base · 2ⁿ⁻¹` (capped at `max`), so retries of many
/// jobs failing together spread out while each job's delays still grow
/// (the ranges of successive retries never overlap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        let quarter = full / 4;
        full - quarter.mul_f64(fastrand::f64())
    }
}

/// What a queue accepts and how long it waits for its backends.
#[derive(Clone, Copy, Debug)]
pub struct JobsConfig {
    pub max_payload_bytes: usize,
    /// How long an enqueue waits for the broker's confirm (through an
    /// outage, reconnects included) before failing.
    pub publish_timeout: Duration,
    /// Finished jobs (succeeded, discarded, dead) are kept this long.
    pub retention: Duration,
    /// A queued or retrying job due this long ago and untouched since is
    /// taken for one whose message was lost, and announced again (a
    /// duplicate is harmless: the store decides what runs). Not for the
    /// in-process queue, whose messages only a crash loses.
    pub sweep_after: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: MAX_PAYLOAD_BYTES,
            publish_timeout: Duration::from_secs(5),
            retention: Duration::from_secs(7 * 24 * 3600),
            sweep_after: Duration::from_secs(600),
        }
    }
}

/// Enqueues jobs and runs workers for them.
#[derive(Clone)]
pub struct JobQueue {
    store: Arc<dyn JobStore>,
    queue: Arc<dyn MessageQueue>,
    config: JobsConfig,
}

/// Kinds are names of handlers: `[a-z0-9._-]`, 1 to 100 characters.
fn valid_kind(kind: &str) -> bool {
    (1..=100).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl JobQueue {
    pub fn new(store: Arc<dyn JobStore>, queue: Arc<dyn MessageQueue>, config: JobsConfig) -> Self {
        Self {
            store,
            queue,
            config,
        }
    }

    /// Memory store and in-process queue: the embedded default.
    pub fn in_process() -> Self {
        Self::new(
            Arc::new(super::store::MemoryJobStore::default()),
            Arc::new(super::transport::InProcessQueue::default()),
            JobsConfig::default(),
        )
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn backends(&self) -> (&'static str, &'static str) {
        (self.queue.backend(), self.store.backend())
    }

    /// Stores the job and hands it to the queue; returns once the queue
    /// has it durably. A unique key held by a pending job returns that
    /// job. Nothing is enqueued when this fails.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, JobError> {
        if !valid_kind(&job.kind) {
            return Err(JobError::Invalid(format!(
                "job kind {:?} is not 1 to 100 of [a-z0-9._-]",
                job.kind
            )));
        }
        let bytes = serde_json::to_vec(&job.payload).unwrap_or_default();
        let size = bytes.len();
        if size > self.config.max_payload_bytes {
            return Err(JobError::Invalid(format!(
                "the payload is {size} bytes, more than {}",
                self.config.max_payload_bytes
            )));
        }
        // Stored as text and read back when the job runs: what cannot be
        // read back (nesting deeper than the reader allows) is refused now.
        if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
            return Err(JobError::Invalid(
                "the payload is nested too deeply to be read back".into(),
            ));
        }
        if job.max_attempts == 0 {
            return Err(JobError::Invalid("max_attempts must be at least 1".into()));
        }
        if job
            .unique_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > 255 || k.contains('\0'))
        {
            return Err(JobError::Invalid(
                "a unique key is 1 to 255 bytes, without NUL".into(),
            ));
        }
        let now = now_ms();
        let run_at_ms = match job.run_at {
            RunAt::Now => now,
            RunAt::At(at) => to_ms(at).max(now),
            RunAt::After(after) => {
                now.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX))
            }
        };
        let record = JobRecord {
            id: uuid::Uuid::now_v7(),
            kind: job.kind,
            payload: job.payload,
            state: JobState::Queued,
            attempts: 0,
            max_attempts: job.max_attempts,
            run_at_ms,
            unique_key: job.unique_key,
            last_error: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        // Stored, announced and (on failure) taken back in a task of its
        // own: a caller that stops waiting (a client gone) cannot leave a
        // stored job that was never announced.
        let queue = self.clone();
        tokio::spawn(async move { queue.store_and_announce(record).await })
            .await
            .map_err(|e| JobError::Unavailable(format!("the enqueue was interrupted: {e}")))?
    }

    async fn store_and_announce(&self, record: JobRecord) -> Result<Enqueued, JobError> {
        if let Inserted::Existing(existing) = self.store.insert(&record).await? {
            metrics::counter!("jobs_deduplicated_total", "kind" => existing.kind.clone())
                .increment(1);
            return Ok(Enqueued::Existing(existing.id));
        }
        if let Err(error) = self.announce(&record).await {
            // Not announced, so not enqueued: the record goes too — unless
            // a late confirm let a worker take it already.
            match self.store.withdraw(record.id, Withdraw::Delete).await {
                Ok(true) => return Err(error),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, job = %record.id, "could not take back an unannounced job");
                    return Err(error);
                }
            }
        }
        metrics::counter!("jobs_enqueued_total", "kind" => record.kind.clone()).increment(1);
        Ok(Enqueued::New(record.id))
    }

    /// A worker's publish (a retry, an early arrival's rest), bounded like
    /// an enqueue's, so a broker outage cannot hold a worker slot or a
    /// drain for ever.
    async fn publish_bounded(&self, message: &JobMessage, delay: Duration) -> Result<(), JobError> {
        tokio::time::timeout(
            self.config.publish_timeout,
            self.queue.publish(message, delay),
        )
        .await
        .unwrap_or_else(|_| Err(JobError::Unavailable("no confirm in time".into())))
    }

    /// Publishes `job`'s message, due at its run time, within the publish
    /// timeout.
    async fn announce(&self, job: &JobRecord) -> Result<(), JobError> {
        let delay = Duration::from_millis(u64::try_from(job.run_at_ms - now_ms()).unwrap_or(0));
        let message = JobMessage {
            id: job.id,
            kind: job.kind.clone(),
            run_at_ms: job.run_at_ms,
        };
        match tokio::time::timeout(
            self.config.publish_timeout,
            self.queue.publish(&message, delay),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(JobError::Unavailable(format!(
                "the {} queue did not confirm within {:?}",
                self.queue.backend(),
                self.config.publish_timeout
            ))),
        }
    }

    /// Hands the store's pending jobs to the queue again: for an
    /// in-process queue over a durable store, whose messages a restart
    /// lost. A job left running by the crash is queued again with that
    /// attempt uncounted. Call once, before starting workers.
    pub async fn recover(&self) -> Result<usize, JobError> {
        let mut after = None;
        let mut recovered = 0;
        loop {
            let page = self.store.pending(after, 500).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.id);
            for job in page {
                if job.state == JobState::Running {
                    self.store
                        .finish(job.id, job.attempts, Outcome::Released, now_ms())
                        .await?;
                }
                self.announce(&job).await?;
                recovered += 1;
            }
        }
        if recovered > 0 {
            tracing::info!(recovered, "pending jobs handed to the queue again");
        }
        Ok(recovered)
    }

    /// Announces again the jobs whose messages seem lost (see
    /// [`JobsConfig::sweep_after`]).
    async fn sweep(&self) {
        let wait = i64::try_from(self.config.sweep_after.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let overdue = match self.store.overdue(now.saturating_sub(wait), now, 500).await {
            Ok(overdue) => overdue,
            Err(error) => {
                tracing::warn!(%error, "cannot look for overdue jobs");
                return;
            }
        };
        for job in overdue {
            tracing::warn!(job = %job.id, kind = job.kind, "job overdue, its message lost: announcing it again");
            metrics::counter!("jobs_swept_total", "kind" => job.kind.clone()).increment(1);
            if let Err(error) = self.announce(&job).await {
                tracing::warn!(%error, job = %job.id, "could not announce an overdue job");
                return;
            }
        }
    }

    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, JobError> {
        self.store.get(id).await
    }

    pub async fn list(
        &self,
        state: Option<JobState>,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError> {
        self.store.list(state, after, limit).await
    }

    /// Runs a dead job again from its first attempt; `None` unless it was
    /// dead.
    pub async fn retry(&self, id: JobId) -> Result<Option<JobRecord>, JobError> {
        let Some(job) = self.store.revive(id, now_ms()).await? else {
            return Ok(None);
        };
        if let Err(error) = self.announce(&job).await {
            // Dead again, so an operator can try once more — unless a late
            // confirm let a worker take it already.
            let dead = Withdraw::Dead {
                error: format!("the retry could not be announced: {error}"),
            };
            if self.store.withdraw(id, dead).await? {
                return Err(error);
            }
        }
        Ok(Some(job))
    }

    /// Sets a job that has not run to its end aside for good.
    pub async fn discard(&self, id: JobId) -> Result<bool, JobError> {
        self.store.discard(id, now_ms()).await
    }

    /// Starts `workers`: each job type consumes with its own bounded
    /// concurrency until [`WorkerPool::drain`].
    pub fn start(&self, workers: Workers) -> WorkerPool {
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let kinds: Vec<String> = workers.kinds.keys().cloned().collect();
        for (kind, registered) in workers.kinds {
            tasks.spawn(consume(
                self.clone(),
                kind,
                registered,
                stop.clone(),
                abort.clone(),
            ));
        }
        for schedule in workers.schedules {
            tasks.spawn(super::schedule::run(self.clone(), schedule, stop.clone()));
        }
        tasks.spawn(housekeeping(self.clone(), kinds, stop.clone()));
        WorkerPool { stop, abort, tasks }
    }
}

/// Refreshes the gauges (jobs by state, ready messages by kind) and prunes
/// finished jobs, until `stop`.
async fn housekeeping(queue: JobQueue, kinds: Vec<String>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(counts) = queue.store.counts().await {
            for (state, n) in counts {
                metrics::gauge!("jobs", "state" => state.as_str()).set(n as f64);
            }
        }
        for kind in &kinds {
            if let Ok(depth) = queue.queue.depth(kind).await {
                metrics::gauge!("jobs_queue_depth", "kind" => kind.clone()).set(depth as f64);
            }
        }
        if queue.queue.backend() != "in_process" {
            queue.sweep().await;
        }
        let retention = i64::try_from(queue.config.retention.as_millis()).unwrap_or(i64::MAX);
        if let Err(error) = queue.store.prune(now_ms().saturating_sub(retention)).await {
            tracing::warn!(%error, "could not prune finished jobs");
        }
    }
}

/// The handlers a process runs, by job kind, and the schedules it fires.
#[derive(Default)]
pub struct Workers {
    kinds: HashMap<String, Registered>,
    schedules: Vec<Schedule>,
}

struct Registered {
    handler: Arc<dyn Handler>,
    concurrency: usize,
    backoff: Backoff,
}

impl Workers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `kind`'s jobs with `handler`, at most `concurrency` at once.
    pub fn register(
        self,
        kind: impl Into<String>,
        handler: Arc<dyn Handler>,
        concurrency: usize,
    ) -> Self {
        self.register_with(kind, handler, concurrency, Backoff::default())
    }

    /// Fires `schedule` from this process (once per firing across every
    /// replica that fires it too).
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    pub fn register_with(
        mut self,
        kind: impl Into<String>,
        handler: Arc<dyn Handler>,
        concurrency: usize,
        backoff: Backoff,
    ) -> Self {
        self.kinds.insert(
            kind.into(),
            Registered {
                handler,
                concurrency: concurrency.max(1),
                backoff,
            },
        );
        self
    }
}

/// Running workers.
pub struct WorkerPool {
    stop: CancellationToken,
    abort: CancellationToken,
    tasks: JoinSet<()>,
}

impl WorkerPool {
    /// Stops taking jobs, lets running ones finish for up to `deadline`,
    /// then stops them and queues them again (their attempt not counted).
    pub async fn drain(mut self, deadline: Duration) {
        self.stop.cancel();
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, all_done).await.is_err() {
            self.abort.cancel();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

/// One job type's consumer: takes deliveries while there is room, runs
/// each in its own task.
async fn consume(
    queue: JobQueue,
    kind: String,
    registered: Registered,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    let registered = Arc::new(registered);
    let slots = Arc::new(Semaphore::new(registered.concurrency));
    let mut deliveries = loop {
        match queue.queue.consume(&kind, registered.concurrency).await {
            Ok(deliveries) => break deliveries,
            Err(error) => {
                tracing::warn!(%error, kind, "cannot consume yet; trying again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let mut running = JoinSet::new();
    loop {
        // `biased`: once stopped, no further delivery is taken, however
        // many are ready.
        let slot = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let delivery = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            delivery = deliveries.next() => delivery,
        };
        let Some(delivery) = delivery else { break };
        let (queue, kind, registered, abort) = (
            queue.clone(),
            kind.clone(),
            registered.clone(),
            abort.clone(),
        );
        running.spawn(async move {
            run_one(&queue, &kind, &registered, delivery, &abort).await;
            drop(slot);
        });
        // Reap finished runs so the set does not grow.
        while let Some(done) = running.try_join_next() {
            log_panic(done);
        }
    }
    // Stop the broker's deliveries first, and keep the channel that the
    // running jobs will settle on until they have: closing it now would
    // hand them to another replica while they still run here.
    deliveries.stop().await;
    while let Some(done) = running.join_next().await {
        log_panic(done);
    }
    drop(deliveries);
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done
        && error.is_panic()
    {
        tracing::error!(%error, "a job's run panicked outside its handler");
    }
}

/// A delivery this early is published again for the rest of its delay
/// (RabbitMQ's delay steps arrive up to a step early); one less early
/// runs at once.
const EARLY_MS: i64 = 5;

/// Runs one delivery to its end: stored outcome first, then the message
/// settled, so a crash in between runs the job again rather than losing it.
async fn run_one(
    queue: &JobQueue,
    kind: &str,
    registered: &Registered,
    delivery: Delivery,
    abort: &CancellationToken,
) {
    let Delivery {
        message,
        redelivered,
        acker,
    } = delivery;
    let message = match message {
        Ok(message) => message,
        Err(reason) => {
            tracing::warn!(kind, reason, "dead-lettered a message that is not a job");
            metrics::counter!("jobs_dead_lettered_total", "kind" => kind.to_owned(), "reason" => "undecodable")
                .increment(1);
            settle(acker.reject().await);
            return;
        }
    };
    let now = now_ms();
    // Delivered early (a delay queue's hop, a clock apart): wait out the
    // rest in the queue, not in a worker.
    if message.run_at_ms > now + EARLY_MS {
        let rest = Duration::from_millis(u64::try_from(message.run_at_ms - now).unwrap_or(0));
        match queue.publish_bounded(&message, rest).await {
            Ok(()) => settle(acker.ack().await),
            Err(_) => settle(acker.requeue().await),
        }
        return;
    }
    let job = match queue.store.start(message.id, redelivered, now).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            // Finished, discarded or running elsewhere: a duplicate.
            settle(acker.ack().await);
            return;
        }
        Err(error) => {
            tracing::warn!(%error, job = %message.id, "cannot start a job; delivered again later");
            tokio::time::sleep(Duration::from_millis(500)).await;
            settle(acker.requeue().await);
            return;
        }
    };
    let labels = [("kind", kind.to_owned())];
    let in_flight = metrics::gauge!("jobs_in_flight", &labels);
    in_flight.increment(1.0);
    let started = tokio::time::Instant::now();
    let result = if job.attempts > job.max_attempts {
        // Delivered again and again because its runs never end (each
        // crashes its worker): dead rather than a loop.
        Some(Err(JobFailure::Permanent(format!(
            "started {} times without finishing",
            job.attempts
        ))))
    } else if job.kind != kind {
        Some(Err(JobFailure::Permanent(format!(
            "no handler for job kind {:?}",
            job.kind
        ))))
    } else if serde_json::to_vec(&job.payload).map_or(usize::MAX, |b| b.len())
        > queue.config.max_payload_bytes
    {
        Some(Err(JobFailure::Permanent(
            "the payload is over the size limit".into(),
        )))
    } else {
        // `None`: stopped by the drain deadline.
        tokio::select! {
            result = AssertUnwindSafe(registered.handler.run(&job)).catch_unwind() => {
                Some(result.unwrap_or_else(|_| {
                    Err(JobFailure::Retry("the handler panicked".into()))
                }))
            }
            () = abort.cancelled() => None,
        }
    };
    in_flight.decrement(1.0);
    let (outcome, label) = match result {
        None => (Outcome::Released, "released"),
        Some(Ok(())) => (Outcome::Succeeded, "succeeded"),
        Some(Err(JobFailure::Retry(error))) if job.attempts < job.max_attempts => {
            let delay = registered.backoff.delay(job.attempts);
            let run_at_ms =
                now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            (Outcome::Retry { run_at_ms, error }, "retried")
        }
        Some(Err(JobFailure::Retry(error) | JobFailure::Permanent(error))) => {
            (Outcome::Dead { error }, "dead")
        }
    };
    metrics::histogram!("jobs_duration_seconds", "kind" => kind.to_owned(), "outcome" => label)
        .record(started.elapsed().as_secs_f64());
    let next = match &outcome {
        Outcome::Retry { run_at_ms, .. } => Some(*run_at_ms),
        _ => None,
    };
    let dead = matches!(outcome, Outcome::Dead { .. });
    let released = matches!(outcome, Outcome::Released);
    match queue
        .store
        .finish(job.id, job.attempts, outcome, now_ms())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            // Taken over by a newer run; its outcome stands.
            settle(acker.ack().await);
            return;
        }
        Err(error) => {
            tracing::warn!(%error, job = %job.id, "cannot store a job's outcome; it runs again");
            settle(acker.requeue().await);
            return;
        }
    }
    if released {
        settle(acker.requeue().await);
    } else if let Some(run_at_ms) = next {
        metrics::counter!("jobs_retries_total", "kind" => kind.to_owned()).increment(1);
        let retry = JobMessage {
            id: job.id,
            kind: job.kind.clone(),
            run_at_ms,
        };
        let delay = Duration::from_millis(u64::try_from(run_at_ms - now_ms()).unwrap_or(0));
        match queue.publish_bounded(&retry, delay).await {
            Ok(()) => settle(acker.ack().await),
            // Delivered again now rather than lost; it runs early.
            Err(_) => settle(acker.requeue().await),
        }
    } else if dead {
        tracing::warn!(job = %job.id, kind, "job is dead");
        metrics::counter!("jobs_dead_lettered_total", "kind" => kind.to_owned(), "reason" => "failed")
            .increment(1);
        settle(acker.reject().await);
    } else {
        settle(acker.ack().await);
    }
}

fn settle(result: Result<(), JobError>) {
    if let Err(error) = result {
        // The broker redelivers an unsettled message; the store's state
        // makes that delivery a no-op.
        tracing::debug!(%error, "could not settle a delivery");
    }
}
