//! What every test in the workspace shares.
//!
//! - [`TestHost`]: a service host on random loopback ports, stopped with an
//!   assertion that it drained and exited cleanly;
//! - [`TempDir`]: a directory for a test's embedded data, removed on drop;
//! - [`eventually`]: polls until a condition holds, and panics naming what
//!   it waited for (never falls through silently);
//! - [`backends`]: where the machine's real servers are (`TEST_REDIS_URL`,
//!   `TEST_DATABASE_URL`, …), read in one place;
//! - [`http::problem`]: asserts an error answer's status, code and shape;
//! - [`PrivateRedis`]: a `redis-server` of the test's own, to kill and restart;
//! - [`PrivateRabbit`]: a RabbitMQ node of the test's own, to stop and restart;
//! - [`contract`]: runs one suite against every backend of a trait, naming
//!   the backend that broke it.
//!
//! Services build on these in their own `test-util` features (typed
//! `spawn_app` helpers), so a test reads like the README's examples.

#![allow(clippy::unwrap_used)]

pub mod backends;
mod contract;
mod eventually;
mod host;
pub mod http;
mod rabbitmq_server;
mod redis_cluster;
mod redis_server;
mod temp_dir;

pub use contract::contract;
pub use eventually::{eventually, eventually_some};
pub use host::TestHost;
pub use rabbitmq_server::PrivateRabbit;
pub use redis_cluster::{Paused, PrivateRedisCluster};
pub use redis_server::PrivateRedis;
pub use temp_dir::TempDir;
