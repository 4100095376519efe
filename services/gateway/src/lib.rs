//! The gateway service: the one public door: REST, auth, rate limits and circuit breakers.
//!
//! Configuration is read from `GATEWAY_*` variables (see the README's
//! configuration table); [`host`] assembles the service on the shared
//! server host, which the binary and the all-in-one runner then serve.

use common::config::{ConfigError, Env, ServiceConfig, ServiceDefaults};
use common::server::{ServerError, ServiceHost, ServiceHostBuilder};

/// Prefix of this service's environment variables.
pub const ENV_PREFIX: &str = "GATEWAY";

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "gateway",
    http_port: 8080,
    grpc_port: None,
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
