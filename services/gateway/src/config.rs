//! `GATEWAY_*` settings; every one has a default (README,
//! "Configuration").

use std::time::Duration;

use common::auth::{KeyRole, TokenSettings, WhenUnset};
use common::config::{ConfigError, Env, Secret, SecretUrl, ServiceConfig, ServiceDefaults};
use resilience::breaker::BreakerConfig;

use crate::upstream::ClassLimits;
use resilience::rate_limit::Quota;

use crate::client_addr::{Cidr, TrustedProxies};
use crate::cors::CorsOrigins;
use crate::ratelimit::OnRedisError;

/// Prefix of this service's environment variables.
pub const ENV_PREFIX: &str = "GATEWAY";

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "gateway",
    http_port: 8080,
    grpc_port: None,
};

/// `GATEWAY_MAX_WEBSOCKETS`, `GATEWAY_WS_QUEUE`, `GATEWAY_WS_SEND_TIMEOUT`.
#[derive(Clone, Copy, Debug)]
pub struct WebSocketLimits {
    pub max_open: usize,
    pub queue: usize,
    pub send_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// How tokens are signed and checked (`GATEWAY_JWT_*` / `PLATFORM_JWT_*`).
    /// In development a random HS256 key is made when none is configured
    /// (tokens then die with the process); production requires one.
    pub tokens: TokenSettings,
    pub upstream_timeout: Duration,
    /// For a connection to an upstream instance (gRPC and pass-through).
    pub upstream_connect_timeout: Duration,
    pub max_body_bytes: usize,
    pub breaker: BreakerConfig,
    /// Relayed WebSockets.
    pub websockets: WebSocketLimits,
    /// Calls in flight per route class to the users service.
    pub concurrency: ClassLimits,
    /// Default per-client quota.
    pub rate_limit: Quota,
    /// Redis shared by all replicas for rate limits; none means in process.
    pub redis_url: Option<SecretUrl>,
    pub on_redis_error: OnRedisError,
    pub redis: common::redis::RedisOptions,
    /// Enables `/admin/*` (on the admin listener) when set; at least 32
    /// bytes.
    pub admin_token: Option<Secret>,
    /// `Sunset` of API v1, an HTTP date.
    pub v1_sunset: String,
    /// HTTP pass-through: public path prefix → service name.
    pub passthrough: Vec<(String, String)>,
    /// Proxies in front of the gateway whose `X-Forwarded-For` is believed
    /// (none by default: the TCP peer is the client).
    pub trusted_proxies: TrustedProxies,
    /// Sign-in attempts per account (the login name, any address).
    pub login_quota: Quota,
    /// Sign-ups per email address.
    pub signup_quota: Quota,
    /// How long a browser ticket (`POST /api/v1/auth/ticket`) may wait to
    /// be redeemed.
    pub ticket_ttl: Duration,
    /// Browser origins allowed to call the API (none by default).
    pub cors_origins: CorsOrigins,
}

impl Config {
    /// Reads `env`, which carries this service's prefix.
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
        let when_unset = if production {
            WhenUnset::Refuse
        } else {
            WhenUnset::Random
        };
        let tokens = TokenSettings::from_env(env, KeyRole::Issuer, when_unset)?;
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
            tokens,
            upstream_timeout: env.get("UPSTREAM_TIMEOUT", Duration::from_secs(5))?,
            upstream_connect_timeout: env
                .get("UPSTREAM_CONNECT_TIMEOUT", Duration::from_secs(1))?,
            max_body_bytes: env.get("MAX_BODY_BYTES", 64 * 1024)?,
            breaker: BreakerConfig {
                min_calls: env.get("BREAKER_MIN_CALLS", defaults.min_calls)?,
                open_for: env.get("BREAKER_OPEN_FOR", defaults.open_for)?,
                slow_call: env.get("BREAKER_SLOW_CALL", defaults.slow_call)?,
                ..defaults
            },
            websockets: WebSocketLimits {
                max_open: env.get("MAX_WEBSOCKETS", 10_000)?,
                queue: env.get("WS_QUEUE", 256)?,
                send_timeout: env.get("WS_SEND_TIMEOUT", Duration::from_secs(10))?,
            },
            concurrency: {
                let defaults = ClassLimits::default();
                ClassLimits {
                    auth: env.get("CONCURRENCY_AUTH", defaults.auth)?,
                    read: env.get("CONCURRENCY_READ", defaults.read)?,
                    write: env.get("CONCURRENCY_WRITE", defaults.write)?,
                }
            },
            rate_limit: Quota {
                limit,
                period: env.get("RATE_LIMIT_PERIOD", Duration::from_secs(60))?,
            },
            redis_url: env
                .shared_optional::<SecretUrl>("REDIS_URL")?
                .filter(|u| !u.is_empty()),
            on_redis_error,
            redis: common::redis::RedisOptions::from_env(env)?,
            admin_token: common::auth::admin_token(env)?,
            v1_sunset: env.get("V1_SUNSET", "Tue, 30 Nov 2027 00:00:00 GMT".to_owned())?,
            passthrough: parse_passthrough(env)?,
            trusted_proxies: trusted_proxies(env)?,
            cors_origins: cors_origins(env)?,
            login_quota: Quota {
                limit: at_least_one(env, "LOGIN_ATTEMPTS_PER_ACCOUNT", 10)?,
                period: env.get("LOGIN_ATTEMPTS_PERIOD", Duration::from_secs(15 * 60))?,
            },
            signup_quota: Quota {
                limit: at_least_one(env, "SIGNUPS_PER_EMAIL", 3)?,
                period: env.get("SIGNUPS_PER_EMAIL_PERIOD", Duration::from_secs(3600))?,
            },
            ticket_ttl: ticket_ttl(env)?,
        })
    }
}

/// `GATEWAY_TICKET_TTL`: long enough for a page to open its socket, short
/// enough that a ticket seen in a log or a proxy's history is stale.
fn ticket_ttl(env: &Env) -> Result<Duration, ConfigError> {
    let ttl = env.get("TICKET_TTL", Duration::from_secs(30))?;
    if ttl.is_zero() || ttl > Duration::from_secs(300) {
        return Err(ConfigError::Invalid {
            var: env.var_name("TICKET_TTL"),
            value: format!("{ttl:?}"),
            reason: "must be between 1s and 5m".into(),
        });
    }
    Ok(ttl)
}

fn at_least_one(env: &Env, key: &str, default: u32) -> Result<u32, ConfigError> {
    match env.get(key, default)? {
        0 => Err(ConfigError::Invalid {
            var: env.var_name(key),
            value: "0".into(),
            reason: "must be at least 1".into(),
        }),
        n => Ok(n),
    }
}

/// `GATEWAY_CORS_ORIGINS`: comma-separated origins, each
/// `scheme://host[:port]` exactly as browsers send it (no path, no `*`:
/// credentials are allowed, so every origin is named).
fn cors_origins(env: &Env) -> Result<CorsOrigins, ConfigError> {
    let raw: String = env.get("CORS_ORIGINS", String::new())?;
    let mut origins = Vec::new();
    for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let valid = rest
            .is_some_and(|host| !host.is_empty() && !host.contains(['/', '*', '?', '#', ' ', '@']));
        if !valid {
            return Err(ConfigError::Invalid {
                var: env.var_name("CORS_ORIGINS"),
                value: raw.clone(),
                reason: format!("{origin:?} is not an origin such as https://app.example.com"),
            });
        }
        origins.push(origin.to_owned());
    }
    Ok(CorsOrigins(origins))
}

/// `GATEWAY_TRUSTED_PROXIES`: comma-separated CIDRs or addresses.
fn trusted_proxies(env: &Env) -> Result<TrustedProxies, ConfigError> {
    let raw: String = env.get("TRUSTED_PROXIES", String::new())?;
    let cidrs = raw
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::parse::<Cidr>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| ConfigError::Invalid {
            var: env.var_name("TRUSTED_PROXIES"),
            value: raw.clone(),
            reason,
        })?;
    Ok(TrustedProxies(cidrs))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_source(&Env::from_map("GATEWAY", vars.iter().copied()))
    }

    #[test]
    fn a_short_admin_token_is_refused_and_never_echoed() {
        let err = config(&[("GATEWAY_ADMIN_TOKEN", "letmein")]).unwrap_err();
        assert!(err.to_string().starts_with("GATEWAY_ADMIN_TOKEN:"), "{err}");
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        assert!(!err.to_string().contains("letmein"));
        let ok = config(&[("GATEWAY_ADMIN_TOKEN", &"a".repeat(32))]).unwrap();
        assert!(ok.admin_token.is_some());
        assert!(
            config(&[("GATEWAY_ADMIN_TOKEN", "")])
                .unwrap()
                .admin_token
                .is_none()
        );
    }

    #[test]
    fn production_requires_a_long_enough_signing_key() {
        let err = config(&[
            ("GATEWAY_ENVIRONMENT", "production"),
            ("GATEWAY_SERVICE_SECRET", &"s".repeat(32)),
        ])
        .unwrap_err();
        assert!(err.to_string().starts_with("GATEWAY_JWT_SECRET:"), "{err}");
        let err = config(&[("GATEWAY_JWT_SECRET", "short")]).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        assert!(
            !err.to_string().contains("short"),
            "the secret is never echoed"
        );
        config(&[
            ("PLATFORM_ENVIRONMENT", "production"),
            ("GATEWAY_JWT_SECRET", &"k".repeat(32)),
            ("GATEWAY_SERVICE_SECRET", &"s".repeat(32)),
        ])
        .unwrap();
    }

    #[test]
    fn development_gets_a_random_key_per_process() {
        let a = config(&[]).unwrap().tokens.signer();
        let b = config(&[]).unwrap().tokens.signer();
        let token = a
            .issue(1, "a", common::auth::TokenUse::Access, None)
            .unwrap()
            .token;
        assert!(a.verify(&token).is_ok());
        assert!(b.verify(&token).is_err());
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
    fn trusted_proxies_are_cidrs_and_none_by_default() {
        assert!(config(&[]).unwrap().trusted_proxies.0.is_empty());
        let ok = config(&[("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8,192.0.2.1")]).unwrap();
        assert_eq!(ok.trusted_proxies.0.len(), 3);
        let err = config(&[("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8,10.1/99")]).unwrap_err();
        assert!(
            err.to_string().starts_with("GATEWAY_TRUSTED_PROXIES:"),
            "{err}"
        );
    }

    #[test]
    fn cors_origins_are_exact_origins_and_none_by_default() {
        assert!(config(&[]).unwrap().cors_origins.0.is_empty());
        let ok = config(&[(
            "GATEWAY_CORS_ORIGINS",
            "https://app.example.com, http://localhost:5173",
        )])
        .unwrap();
        assert_eq!(ok.cors_origins.0.len(), 2);
        for bad in [
            "*",
            "https://*.example.com",
            "app.example.com",
            "https://a.example/path",
        ] {
            let err = config(&[("GATEWAY_CORS_ORIGINS", bad)]).unwrap_err();
            assert!(
                err.to_string().starts_with("GATEWAY_CORS_ORIGINS:"),
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
