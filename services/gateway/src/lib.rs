//! The gateway: the platform's one public door.
//!
//! REST under `/api/v1` (users and sign-in so far), translated to the
//! users service's gRPC API through [`upstream::Upstream`] (discovery,
//! round robin, circuit breaker, deadline, retries for idempotent calls);
//! JWT access tokens ([`jwt`]); RFC 9457 problem details for every error
//! ([`problem`]). Configuration is read from `GATEWAY_*` variables (see the
//! README).

pub mod jwt;
pub mod problem;
pub mod request;
pub mod routes;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use common::config::{ConfigError, Env, Secret, ServiceConfig, ServiceDefaults};
use common::discovery::Registry;
use common::server::{ServerError, ServiceHost, ServiceHostBuilder};
use resilience::breaker::BreakerConfig;
use resilience::clock::SystemClock;

use crate::jwt::TokenSigner;
use crate::upstream::Upstream;

/// Prefix of this service's environment variables.
pub const ENV_PREFIX: &str = "GATEWAY";

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "gateway",
    http_port: 8080,
    grpc_port: None,
};

/// Shortest accepted signing key: HS256 keys shorter than the hash add no
/// strength and are easy to brute-force offline.
const MIN_SECRET_BYTES: usize = 32;

#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// HS256 signing key. In development a random one is made when none is
    /// configured (tokens then die with the process); production requires
    /// one.
    pub jwt_secret: Secret,
    pub jwt_ttl: Duration,
    pub upstream_timeout: Duration,
    pub max_body_bytes: usize,
    pub breaker: BreakerConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Env::from_process(ENV_PREFIX))
    }

    pub fn from_source(env: &Env) -> Result<Self, ConfigError> {
        let environment: String = env.shared("ENVIRONMENT", "development".to_owned())?;
        let production = match environment.as_str() {
            "production" => true,
            "development" => false,
            _ => {
                return Err(ConfigError::Invalid {
                    var: env.var_name("ENVIRONMENT"),
                    value: environment,
                    reason: "expected development or production".into(),
                });
            }
        };
        let jwt_secret = match env.optional::<Secret>("JWT_SECRET")? {
            Some(secret) if secret.expose().len() >= MIN_SECRET_BYTES => secret,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    var: env.var_name("JWT_SECRET"),
                    value: "***".into(),
                    reason: format!("must be at least {MIN_SECRET_BYTES} bytes"),
                });
            }
            None if production => {
                return Err(ConfigError::Invalid {
                    var: env.var_name("JWT_SECRET"),
                    value: String::new(),
                    reason: "is required when ENVIRONMENT is production".into(),
                });
            }
            None => Secret::new(format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )),
        };
        let defaults = BreakerConfig::default();
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
            jwt_secret,
            jwt_ttl: env.get("JWT_TTL", Duration::from_secs(15 * 60))?,
            upstream_timeout: env.get("UPSTREAM_TIMEOUT", Duration::from_secs(5))?,
            max_body_bytes: env.get("MAX_BODY_BYTES", 64 * 1024)?,
            breaker: BreakerConfig {
                min_calls: env.get("BREAKER_MIN_CALLS", defaults.min_calls)?,
                open_for: env.get("BREAKER_OPEN_FOR", defaults.open_for)?,
                slow_call: env.get("BREAKER_SLOW_CALL", defaults.slow_call)?,
                ..defaults
            },
        })
    }
}

/// What the request handlers share.
pub struct Gateway {
    pub users: Upstream,
    pub signer: Arc<TokenSigner>,
}

/// The gateway's routes on a host, finding upstreams in the configured
/// registry.
pub async fn host(config: Config) -> Result<ServiceHostBuilder, ServerError> {
    host_with_registry(config, None).await
}

/// Like [`host`], finding upstreams in `registry` (the all-in-one runner's
/// shared one) instead of the configured registry.
pub async fn host_with_registry(
    config: Config,
    registry: Option<Arc<dyn Registry>>,
) -> Result<ServiceHostBuilder, ServerError> {
    let registry = registry.unwrap_or_else(|| config.service.discovery.connect());
    let clock = Arc::new(SystemClock);
    let signer = Arc::new(TokenSigner::new(
        config.jwt_secret.expose().as_bytes(),
        config.jwt_ttl,
    ));
    let gateway = web::Data::new(Gateway {
        users: Upstream::new(
            "users",
            registry.as_ref(),
            config.breaker.clone(),
            clock,
            config.upstream_timeout,
        ),
        signer: signer.clone(),
    });
    let signer = web::Data::from(signer);
    let max_body = config.max_body_bytes;
    Ok(ServiceHost::builder(config.service)
        .registry(registry)
        .http(move |cfg| {
            cfg.app_data(gateway.clone()).app_data(signer.clone());
            routes::extractor_config(cfg, max_body);
            routes::configure(cfg);
        }))
}
