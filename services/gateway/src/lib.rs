//! The gateway: the platform's one public door.
//!
//! REST under `/api/v1` (users and sign-in so far), translated to the
//! users service's gRPC API through [`upstream::Upstream`] (discovery,
//! round robin, circuit breaker, deadline, retries for idempotent calls);
//! JWT access tokens ([`jwt`]); RFC 9457 problem details for every error
//! ([`problem`]). Configuration is read from `GATEWAY_*` variables (see the
//! README).

pub use common::auth as jwt;
pub mod chat;
pub mod openapi;
pub mod problem;
pub mod proxy;
pub mod ratelimit;
pub mod request;
pub mod routes;
pub mod upstream;
pub mod versioning;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use common::config::{ConfigError, Env, Secret, ServiceConfig, ServiceDefaults};
use common::discovery::Registry;
use common::server::{ServiceHost, ServiceHostBuilder};
use resilience::breaker::BreakerConfig;
use resilience::clock::SystemClock;
use resilience::rate_limit::{MemoryLimiter, Quota, RedisLimiter};

use crate::jwt::TokenSigner;
use crate::ratelimit::{DynamicRateLimiter, OnRedisError, WorkerRedis};
use crate::routes::admin::AdminToken;
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
    /// Default per-client quota.
    pub rate_limit: Quota,
    /// Redis shared by all replicas for rate limits; none means in process.
    pub redis_url: Option<String>,
    pub on_redis_error: OnRedisError,
    /// Enables `/admin/*` when set.
    pub admin_token: Option<Secret>,
    /// `Sunset` of API v1, an HTTP date.
    pub v1_sunset: String,
    /// HTTP pass-through: public path prefix → service name.
    pub passthrough: Vec<(String, String)>,
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
        let jwt_secret = match env.shared_optional::<Secret>("JWT_SECRET")? {
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
        let on_redis_error: String = env.get("RATE_LIMIT_ON_REDIS_ERROR", "local".to_owned())?;
        let on_redis_error = match on_redis_error.as_str() {
            "local" => OnRedisError::Local,
            "open" => OnRedisError::Open,
            "closed" => OnRedisError::Closed,
            _ => {
                return Err(ConfigError::Invalid {
                    var: env.var_name("RATE_LIMIT_ON_REDIS_ERROR"),
                    value: on_redis_error,
                    reason: "expected local, open or closed".into(),
                });
            }
        };
        let limit: u32 = env.get("RATE_LIMIT_REQUESTS", 100)?;
        if limit == 0 {
            return Err(ConfigError::Invalid {
                var: env.var_name("RATE_LIMIT_REQUESTS"),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
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
            rate_limit: Quota {
                limit,
                period: env.get("RATE_LIMIT_PERIOD", Duration::from_secs(60))?,
            },
            redis_url: env
                .shared_optional::<String>("REDIS_URL")?
                .filter(|u| !u.is_empty()),
            on_redis_error,
            admin_token: env
                .optional::<Secret>("ADMIN_TOKEN")?
                .filter(|t| !t.expose().is_empty()),
            v1_sunset: env.get("V1_SUNSET", "Tue, 30 Nov 2027 00:00:00 GMT".to_owned())?,
            passthrough: parse_passthrough(env)?,
        })
    }
}

/// `GATEWAY_PASSTHROUGH`: `prefix=service` pairs, comma-separated, e.g.
/// `/api/v1/echo=echo`. Prefixes must start with `/` and may not shadow
/// the REST API's own routes.
fn parse_passthrough(env: &Env) -> Result<Vec<(String, String)>, ConfigError> {
    let raw: String = env.get("PASSTHROUGH", String::new())?;
    let invalid = |reason: &str| ConfigError::Invalid {
        var: env.var_name("PASSTHROUGH"),
        value: raw.clone(),
        reason: reason.to_owned(),
    };
    let mut routes = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (prefix, service) = entry
            .split_once('=')
            .ok_or_else(|| invalid("expected prefix=service"))?;
        let prefix = prefix.trim_end_matches('/');
        let reserved = [
            "/api/v1/users",
            "/api/v1/auth",
            "/api/v1/posts",
            "/api/v1/comments",
            "/api/v1/chat",
            "/api/v2",
            "/admin",
        ];
        if !prefix.starts_with('/')
            || service.is_empty()
            || reserved.iter().any(|r| prefix.starts_with(r))
        {
            return Err(invalid(
                "prefixes start with / and may not shadow the REST API",
            ));
        }
        routes.push((prefix.to_owned(), service.to_owned()));
    }
    Ok(routes)
}

/// What the request handlers share.
pub struct Gateway {
    pub users: Upstream,
    pub signer: Arc<TokenSigner>,
}

fn redis_config(url: &str) -> Result<fred::prelude::Config, GatewayStartError> {
    fred::prelude::Config::from_url(url).map_err(|source| GatewayStartError::Redis {
        url: url.to_owned(),
        source,
    })
}

/// A Redis client that connects (and reconnects) in the background on the
/// calling thread's runtime: the gateway starts even while Redis is down
/// and limits in process until it answers.
fn redis_client(config: fred::prelude::Config) -> Option<fred::prelude::Client> {
    use fred::prelude::*;
    let built = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(1);
            c.internal_command_timeout = Duration::from_secs(1);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_millis(250);
        })
        .set_policy(ReconnectPolicy::new_constant(0, 500))
        .build();
    match built {
        Ok(client) => {
            drop(client.connect());
            Some(client)
        }
        Err(error) => {
            tracing::error!(%error, "rate limits stay in process");
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayStartError {
    #[error("invalid Redis configuration {url}")]
    Redis {
        url: String,
        #[source]
        source: fred::error::Error,
    },
}

/// The gateway's routes on a host, finding upstreams in the configured
/// registry.
pub async fn host(config: Config) -> Result<ServiceHostBuilder, GatewayStartError> {
    host_with_registry(config, None).await
}

/// Like [`host`], finding upstreams in `registry` (the all-in-one runner's
/// shared one) instead of the configured registry.
pub async fn host_with_registry(
    config: Config,
    registry: Option<Arc<dyn Registry>>,
) -> Result<ServiceHostBuilder, GatewayStartError> {
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
    // Parsed here so a bad URL stops the start; each worker then makes its
    // own client from it.
    let redis = config.redis_url.as_deref().map(redis_config).transpose()?;
    let limiter = web::Data::new(Arc::new(DynamicRateLimiter::new(
        config.rate_limit,
        MemoryLimiter::new(Arc::new(SystemClock)),
        config.on_redis_error,
    )));
    let admin = web::Data::new(AdminToken(config.admin_token.clone()));
    let sunset = web::Data::new(versioning::V1Sunset(config.v1_sunset.clone()));
    let passthrough_routes: Vec<(String, Arc<Upstream>)> = config
        .passthrough
        .iter()
        .map(|(prefix, service)| {
            let service: &'static str = Box::leak(service.clone().into_boxed_str());
            let upstream = Upstream::new(
                service,
                registry.as_ref(),
                config.breaker.clone(),
                Arc::new(SystemClock),
                config.upstream_timeout,
            );
            (prefix.clone(), Arc::new(upstream))
        })
        .collect();
    let chat_upstream = Arc::new(Upstream::new(
        "chat",
        registry.as_ref(),
        config.breaker.clone(),
        Arc::new(SystemClock),
        config.upstream_timeout,
    ));
    let closing = chat::Closing(common::shutdown::CancellationToken::new());
    Ok(ServiceHost::builder(config.service)
        .registry(registry)
        .on_drain(closing.0.clone())
        .http(move |cfg| {
            cfg.app_data(gateway.clone())
                .app_data(signer.clone())
                .app_data(limiter.clone())
                .app_data(admin.clone())
                .app_data(sunset.clone())
                // Runs once per worker: each gets its own upstream client
                // and Redis connection.
                .app_data(web::Data::new(proxy::Passthrough::for_this_worker()))
                .app_data(web::Data::new(WorkerRedis::new(
                    redis
                        .clone()
                        .and_then(redis_client)
                        .map(|client| RedisLimiter::new(client, "ratelimit:")),
                )));
            // Before the REST scopes: a scope that matches a prefix answers
            // 404 itself rather than passing the request on.
            for (prefix, upstream) in &passthrough_routes {
                // A scope matches its prefix without a regex, and carries
                // its upstream, so a request needs no route lookup.
                cfg.service(
                    web::scope(prefix)
                        .app_data(web::Data::new(upstream.clone()))
                        .wrap(actix_web::middleware::from_fn(ratelimit::limit_rate))
                        .wrap(actix_web::middleware::from_fn(request::request_id))
                        .default_service(web::to(proxy::forward)),
                );
            }
            chat::configure(cfg, chat_upstream.clone(), max_body, closing.clone());
            routes::extractor_config(cfg, max_body);
            routes::configure(cfg);
            routes::admin::configure(cfg);
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_source(&Env::from_map("GATEWAY", vars.iter().copied()))
    }

    #[test]
    fn production_requires_a_long_enough_signing_key() {
        let err = config(&[("GATEWAY_ENVIRONMENT", "production")]).unwrap_err();
        assert!(err.to_string().starts_with("GATEWAY_JWT_SECRET:"), "{err}");
        let err = config(&[("GATEWAY_JWT_SECRET", "short")]).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        assert!(
            !err.to_string().contains("short"),
            "the secret is never echoed"
        );
        let ok = config(&[
            ("PLATFORM_ENVIRONMENT", "production"),
            ("GATEWAY_JWT_SECRET", &"k".repeat(32)),
        ])
        .unwrap();
        assert_eq!(ok.jwt_secret.expose().len(), 32);
    }

    #[test]
    fn development_gets_a_random_key_per_process() {
        let a = config(&[]).unwrap();
        let b = config(&[]).unwrap();
        assert_ne!(a.jwt_secret, b.jwt_secret);
        assert!(a.jwt_secret.expose().len() >= MIN_SECRET_BYTES);
    }

    #[test]
    fn passthrough_routes_may_not_shadow_the_rest_api() {
        let ok = config(&[("GATEWAY_PASSTHROUGH", "/api/v1/echo=echo, /files/=storage")]).unwrap();
        assert_eq!(
            ok.passthrough,
            [
                ("/api/v1/echo".to_owned(), "echo".to_owned()),
                ("/files".to_owned(), "storage".to_owned())
            ]
        );
        for bad in [
            "/api/v1/users=evil",
            "/api/v1/chat/x=chat",
            "chat",
            "nochat=chat",
            "/x=",
        ] {
            let err = config(&[("GATEWAY_PASSTHROUGH", bad)]).unwrap_err();
            assert!(
                err.to_string().starts_with("GATEWAY_PASSTHROUGH:"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn unknown_redis_failure_policy_is_rejected() {
        let err = config(&[("GATEWAY_RATE_LIMIT_ON_REDIS_ERROR", "maybe")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("GATEWAY_RATE_LIMIT_ON_REDIS_ERROR:")
        );
        assert!(config(&[("GATEWAY_RATE_LIMIT_REQUESTS", "0")]).is_err());
    }
}
