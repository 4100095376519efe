//! Durable background jobs: the seed's WorkerPool and MessageQueue.
//!
//! A job's record (payload, state, attempts, last error) lives in a
//! [`JobStore`] — the owning service's database, or memory — and the
//! [`MessageQueue`] carries only its id to a worker: RabbitMQ (feature
//! `rabbitmq`) or [`InProcessQueue`]. The store decides what runs: a
//! delivery whose job has finished, been discarded or is running elsewhere
//! is acknowledged and skipped, so duplicate deliveries (a broker's
//! at-least-once) change nothing, and every transition names the attempt
//! it ends, so a run that was taken over cannot overwrite a newer one.
//!
//! - [`JobQueue::enqueue`] returns once the queue has the job durably; a
//!   unique key held by a pending job returns that job.
//! - A failed run is retried after [`Backoff`] (exponential, jittered) up
//!   to the job's `max_attempts`, then the job is dead (and its message
//!   dead-lettered); a permanent failure (a payload that does not decode)
//!   is dead at once. Dead jobs can be retried or discarded.
//! - [`WorkerPool::drain`] stops taking jobs and gives running ones until a
//!   deadline, then queues them again.

pub mod admin;
mod engine;
mod model;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
mod schedule;
mod settings;
#[cfg(feature = "jobs-sql")]
mod sql;
#[cfg(feature = "jobs-sql")]
mod sql_batch;
mod store;
mod transport;

pub use engine::{
    Backoff, Handler, JobFailure, JobQueue, JobsConfig, WorkerPool, Workers, handler_fn,
};
pub use model::{
    DEFAULT_MAX_ATTEMPTS, Enqueued, JobError, JobId, JobRecord, JobState, MAX_PAYLOAD_BYTES,
    NewJob, RunAt, now_ms,
};
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{RabbitMqConfig, RabbitMqQueue};
pub use schedule::Schedule;
pub use settings::{JobsBackend, JobsSettings};
#[cfg(feature = "jobs-sql")]
pub use sql::SqlJobStore;
pub use store::{Inserted, JobStore, MEMORY_CAPACITY, MemoryJobStore, Outcome, Withdraw};
pub use transport::{
    Acker, Deliveries, Delivery, IN_PROCESS_CAPACITY, InProcessQueue, JobMessage, MessageQueue,
    Namespaced,
};
