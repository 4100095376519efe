//! The users service: accounts, posts and comments; the platform's source of truth.
//!
//! Configuration is read from `USERS_*` variables (see the README's
//! configuration table); [`host`] assembles the service on the shared
//! server host, which the binary and the all-in-one runner then serve.

pub mod domain;
pub mod events;
pub mod store;

use common::config::{ConfigError, Env, ServiceConfig, ServiceDefaults};
use common::server::{ServerError, ServiceHost, ServiceHostBuilder};

/// Prefix of this service's environment variables.
pub const ENV_PREFIX: &str = "USERS";

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "users",
    http_port: 8081,
    grpc_port: Some(50051),
};

#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Env::from_process(ENV_PREFIX))
    }

    pub fn from_source(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
        })
    }
}

/// The service's routes, gRPC services and readiness checks on a host.
pub async fn host(config: Config) -> Result<ServiceHostBuilder, ServerError> {
    Ok(ServiceHost::builder(config.service))
}
