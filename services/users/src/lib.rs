//! The users service: accounts, posts and comments; the platform's source
//! of truth.
//!
//! Every change is an event in the event store ([`store`]), applied to the
//! read models and queued in the outbox in the same transaction; a relay
//! publishes the outbox to the event bus. Single reads go through the
//! multi-level cache ([`views`]). The gRPC API is in [`grpc`].
//!
//! [`config`] reads the `USERS_*` settings and [`startup::build`] puts the
//! service on a host.

pub mod config;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod outbox;
pub mod password;
pub mod startup;
pub mod store;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod views;

use common::config::{ConfigError, Env, ServiceConfig};
use common::server::ServiceHostBuilder;
use common::service::{Service, ServiceEntry, Shared};

pub use config::Config;
pub use startup::{StartError, build};

pub struct Users;

impl Service for Users {
    const NAME: &'static str = config::DEFAULTS.name;
    const ENV_PREFIX: &'static str = config::ENV_PREFIX;
    type Config = Config;
    type Error = StartError;

    fn config(env: &Env) -> Result<Config, ConfigError> {
        Config::from_source(env)
    }

    fn service_config(config: &Config) -> &ServiceConfig {
        &config.service
    }

    async fn build(config: Config, shared: &Shared) -> Result<ServiceHostBuilder, StartError> {
        build(config, shared).await
    }
}

/// This service in the all-in-one runner's list.
pub const SERVICE: ServiceEntry = ServiceEntry::of::<Users>();
