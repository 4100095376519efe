//! The storage service: resumable uploads and streaming downloads.
//! (Coming: only the host — health, metrics, discovery — exists today.)
//!
//! Every service has this shape: [`config`] reads its settings,
//! [`startup::build`] connects its backends and puts its API on a host,
//! and [`Storage`] ties them together for the binary and the
//! all-in-one runner; the rest of the crate is one module per concern.

pub mod config;
pub mod startup;
#[cfg(feature = "test-util")]
pub mod test_util;

use common::config::{ConfigError, Env, ServiceConfig};
use common::server::ServiceHostBuilder;
use common::service::{Service, ServiceEntry, Shared};

pub use config::Config;
pub use startup::{StartError, build};

pub struct Storage;

impl Service for Storage {
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
pub const SERVICE: ServiceEntry = ServiceEntry::of::<Storage>();
