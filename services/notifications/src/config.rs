//! `NOTIFICATIONS_*` settings; every one has a default (README,
//! "Configuration").

use common::config::{ConfigError, Env, ServiceConfig, ServiceDefaults};

/// Prefix of this service's environment variables.
pub const ENV_PREFIX: &str = "NOTIFICATIONS";

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "notifications",
    http_port: 8083,
    grpc_port: Some(50053),
};

#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
}

impl Config {
    /// Reads `env`, which carries this service's prefix.
    pub fn from_source(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
        })
    }
}
