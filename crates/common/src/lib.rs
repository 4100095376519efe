//! What every platform service shares.
//!
//! - [`service`]: what a service is to the binaries and the all-in-one
//!   runner that start it, and the backends they share;
//! - [`problem`]: the RFC 9457 error body every service answers with;
//! - [`cache`] (feature `cache`): the multi-level cache (moka, Redis, disk);
//! - [`config`]: typed settings from `<SERVICE>_*` / `PLATFORM_*` variables;
//! - [`telemetry`]: logs, OpenTelemetry traces and trace-context propagation;
//! - [`metrics`]: the Prometheus recorder and HTTP/gRPC request metrics;
//! - [`health`]: liveness and readiness;
//! - [`jobs`]: durable background jobs (RabbitMQ with feature `rabbitmq`, or
//!   in process);
//! - [`shutdown`]: signals and cancellation;
//! - [`discovery`]: the service registry (Consul with feature `consul`, or
//!   static);
//! - [`events`]: CloudEvents over Kafka (feature `kafka`) or an in-process
//!   bus;
//! - [`auth`]: the access tokens the gateway signs and services verify;
//! - [`clients`]: the constructors of every outbound client, each with
//!   the timeouts it requires;
//! - [`counters`]: atomic counters with TTLs and fixed windows (Redis with
//!   feature `redis`, or in process);
//! - [`lock`]: distributed locks with fencing tokens (Redis with feature
//!   `redis`, or in process);
//! - [`json`]: whole numbers in request bodies, as JSON Schema reads them;
//! - [`redis`] (feature `redis`): connecting a command client and a subscriber to Redis;
//! - [`server`]: the host that serves one service's HTTP and gRPC APIs with
//!   all of the above and shuts it down cleanly.

pub mod auth;
#[cfg(feature = "cache")]
pub mod cache;
pub mod clients;
pub mod config;
pub mod counters;
#[cfg(feature = "sql")]
pub mod db;
pub mod discovery;
pub mod events;
pub mod exit;
pub mod health;
pub mod jobs;
pub mod json;
pub mod lock;
pub mod metrics;
pub mod problem;
#[cfg(feature = "redis")]
pub mod redis;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
