//! Typed configuration read from environment variables.
//!
//! Every service reads its settings from variables named `<PREFIX>_<KEY>`,
//! where the prefix is the service's name in upper case (`USERS_HTTP_ADDR`).
//! Settings that are usually the same for the whole platform (log format,
//! discovery, tracing endpoint) may also be given once as `PLATFORM_<KEY>`;
//! the service's own variable wins. Every key has a default, so an empty
//! environment starts a working service.
//!
//! Values are parsed once, here, into typed fields; an invalid value is an
//! error that names the variable, so a typo fails at start-up with one line
//! instead of misbehaving later.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::discovery::DiscoveryConfig;
use crate::telemetry::{LogFormat, TelemetryConfig};

/// actix-server narrates every worker's start and stop at info level.
const DEFAULT_LOG_FILTER: &str = "info,actix_server=warn";

/// Prefix for settings shared by every service.
pub const SHARED_PREFIX: &str = "PLATFORM";

/// A setting that could not be used, naming the variable that holds it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: invalid value {value:?}: {reason}")]
    Invalid {
        var: String,
        value: String,
        reason: String,
    },
}

/// A snapshot of the variables one service reads, with its prefix.
///
/// Tests build one from a map instead of mutating the process environment,
/// which is shared by every test thread.
#[derive(Clone, Debug)]
pub struct Env {
    prefix: String,
    vars: HashMap<String, String>,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process(prefix: &str) -> Self {
        Self::from_map(prefix, std::env::vars())
    }

    pub fn from_map<I, K, V>(prefix: &str, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            prefix: prefix.to_ascii_uppercase(),
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The same variables seen with another service's prefix.
    pub fn with_prefix(&self, prefix: &str) -> Self {
        Self {
            prefix: prefix.to_ascii_uppercase(),
            vars: self.vars.clone(),
        }
    }

    /// The same variables with `name` set to `value`.
    pub fn with_var(&self, name: &str, value: impl Into<String>) -> Self {
        let mut vars = self.vars.clone();
        vars.insert(name.to_owned(), value.into());
        Self {
            prefix: self.prefix.clone(),
            vars,
        }
    }

    /// Name of this service's variable for `key`.
    pub fn var_name(&self, key: &str) -> String {
        format!("{}_{key}", self.prefix)
    }

    fn lookup(&self, key: &str, shared: bool) -> Option<(String, &str)> {
        let own = self.var_name(key);
        if let Some(value) = self.vars.get(&own) {
            return Some((own, value));
        }
        if shared {
            let platform = format!("{SHARED_PREFIX}_{key}");
            if let Some(value) = self.vars.get(&platform) {
                return Some((platform, value));
            }
        }
        None
    }

    /// An unprefixed variable defined by another standard (`RUST_LOG`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn standard(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// `<PREFIX>_<key>`, parsed, or `None` when unset.
    pub fn optional<T: FromEnvValue>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.parse(key, false)
    }

    /// `<PREFIX>_<key>`, parsed, or `default` when unset.
    pub fn get<T: FromEnvValue>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        Ok(self.parse(key, false)?.unwrap_or(default))
    }

    /// `<PREFIX>_<key>`, else `PLATFORM_<key>`, parsed, or `None`.
    pub fn shared_optional<T: FromEnvValue>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.parse(key, true)
    }

    /// `<PREFIX>_<key>`, else `PLATFORM_<key>`, parsed, or `default`.
    pub fn shared<T: FromEnvValue>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        Ok(self.parse(key, true)?.unwrap_or(default))
    }

    fn parse<T: FromEnvValue>(&self, key: &str, shared: bool) -> Result<Option<T>, ConfigError> {
        let Some((var, raw)) = self.lookup(key, shared) else {
            return Ok(None);
        };
        T::from_env_value(raw.trim())
            .map(Some)
            .map_err(|reason| ConfigError::Invalid {
                var,
                value: raw.to_owned(),
                reason,
            })
    }
}

/// How a type is read from one variable's text.
pub trait FromEnvValue: Sized {
    fn from_env_value(raw: &str) -> Result<Self, String>;
}

macro_rules! from_str_value {
    ($($ty:ty),*) => {$(
        impl FromEnvValue for $ty {
            fn from_env_value(raw: &str) -> Result<Self, String> {
                <$ty as FromStr>::from_str(raw).map_err(|e| e.to_string())
            }
        }
    )*};
}
from_str_value!(
    String,
    u16,
    u32,
    u64,
    i64,
    usize,
    SocketAddr,
    std::path::PathBuf
);

impl FromEnvValue for bool {
    fn from_env_value(raw: &str) -> Result<Self, String> {
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err("expected true or false".into()),
        }
    }
}

/// Durations are written with a unit (`500ms`, `30s`, `5m`, `1h`); a bare
/// number means seconds.
impl FromEnvValue for Duration {
    fn from_env_value(raw: &str) -> Result<Self, String> {
        let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
        let (digits, unit) = raw.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| "expected a duration such as 500ms, 30s or 5m".to_owned())?;
        let per_unit = match unit.trim() {
            "ms" => Duration::from_millis(1),
            "" | "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} (use ms, s, m or h)"
                ));
            }
        };
        per_unit
            .checked_mul(u32::try_from(n).map_err(|_| "duration too large".to_owned())?)
            .ok_or_else(|| "duration too large".to_owned())
    }
}

/// A value that must never reach a log line (tokens, passwords, keys).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromEnvValue for Secret {
    fn from_env_value(raw: &str) -> Result<Self, String> {
        Ok(Self(raw.to_owned()))
    }
}

/// A connection URL that may carry credentials (`redis://:pw@host`,
/// `postgres://user:pw@host/db`): shown with the password as `***` in
/// `Debug` and `Display`, so a config dump or an error message cannot leak
/// it; [`SecretUrl::expose`] gives the real one to the client library.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", redact_url(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl FromEnvValue for SecretUrl {
    fn from_env_value(raw: &str) -> Result<Self, String> {
        Ok(Self(raw.to_owned()))
    }
}

/// `url` with the password of its user info, and any `password=` query
/// parameter, replaced by `***`; for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// Ports a service listens on when nothing is configured.
#[derive(Clone, Copy, Debug)]
pub struct ServiceDefaults {
    pub name: &'static str,
    pub http_port: u16,
    /// `None` for a service without a gRPC API (the gateway).
    pub grpc_port: Option<u16>,
}

/// What the shared server host needs to run any service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub name: &'static str,
    pub http_addr: SocketAddr,
    pub grpc_addr: Option<SocketAddr>,
    /// The operators' listener: `/metrics`, detailed readiness and the
    /// service's `/admin/*`. Loopback by default; never the public port.
    pub admin_addr: SocketAddr,
    pub http_workers: usize,
    /// Longest time in-flight requests get to finish after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// Host other services and the health checker reach this instance at.
    pub advertise_host: String,
    pub instance_id: String,
    pub discovery: DiscoveryConfig,
    pub telemetry: TelemetryConfig,
    /// The service token this service's calls carry, and the secret its
    /// gRPC API checks callers' tokens with.
    pub service_auth: crate::auth::ServiceAuthConfig,
}

impl ServiceConfig {
    pub fn from_env(env: &Env, defaults: ServiceDefaults) -> Result<Self, ConfigError> {
        let http_addr = env.get(
            "HTTP_ADDR",
            SocketAddr::from(([0, 0, 0, 0], defaults.http_port)),
        )?;
        let grpc_addr = match defaults.grpc_port {
            Some(port) => Some(env.get("GRPC_ADDR", SocketAddr::from(([0, 0, 0, 0], port)))?),
            None => None,
        };
        // Loopback, 1000 above the HTTP port: reachable by a sidecar or a
        // port-forward, not by the clients of the public port.
        let admin_addr = env.shared(
            "ADMIN_ADDR",
            SocketAddr::from(([127, 0, 0, 1], defaults.http_port.saturating_add(1000))),
        )?;
        if admin_addr == http_addr && admin_addr.port() != 0 {
            return Err(ConfigError::Invalid {
                var: env.var_name("ADMIN_ADDR"),
                value: admin_addr.to_string(),
                reason: "must differ from HTTP_ADDR: admin routes never share the public port"
                    .into(),
            });
        }
        let default_workers = std::thread::available_parallelism()
            .map(|n| n.get().min(4))
            .unwrap_or(1);
        let http_workers = env.get("HTTP_WORKERS", default_workers)?;
        if http_workers == 0 {
            return Err(ConfigError::Invalid {
                var: env.var_name("HTTP_WORKERS"),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let advertise_host = env.shared("ADVERTISE_HOST", "127.0.0.1".to_owned())?;
        let instance_id = env.get(
            "INSTANCE_ID",
            format!("{}-{}-{}", defaults.name, advertise_host, http_addr.port()),
        )?;

        Ok(Self {
            name: defaults.name,
            http_addr,
            grpc_addr,
            admin_addr,
            http_workers,
            shutdown_timeout: env.shared("SHUTDOWN_TIMEOUT", Duration::from_secs(30))?,
            advertise_host,
            instance_id,
            discovery: DiscoveryConfig::from_env(env)?,
            telemetry: TelemetryConfig::from_env(env, defaults.name)?,
            service_auth: crate::auth::ServiceAuthConfig::from_env(
                env,
                defaults.name,
                grpc_addr.is_some(),
            )?,
        })
    }
}

impl ServiceConfig {
    /// Loopback, ephemeral ports, static discovery, one worker: how tests
    /// and embedders run a service next to others without clashing.
    pub fn ephemeral(name: &'static str, with_grpc: bool) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            name,
            http_addr: loopback,
            grpc_addr: with_grpc.then_some(loopback),
            admin_addr: loopback,
            http_workers: 1,
            shutdown_timeout: Duration::from_secs(5),
            advertise_host: "127.0.0.1".into(),
            instance_id: format!("{name}-{}", std::process::id()),
            discovery: DiscoveryConfig::Static {
                services: Vec::new(),
            },
            telemetry: TelemetryConfig {
                service_name: name.into(),
                log_format: LogFormat::Pretty,
                log_filter: "info".into(),
                otlp_endpoint: None,
            },
            service_auth: crate::auth::ServiceAuthConfig::process_default(name),
        }
    }
}

impl TelemetryConfig {
    pub fn from_env(env: &Env, service_name: &str) -> Result<Self, ConfigError> {
        let filter = match env.standard("RUST_LOG") {
            Some(filter) => filter.to_owned(),
            None => env.shared("LOG", DEFAULT_LOG_FILTER.to_owned())?,
        };
        let otlp_endpoint = match env.shared_optional::<String>("OTLP_ENDPOINT")? {
            Some(endpoint) => Some(endpoint),
            None => env
                .standard("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(str::to_owned),
        }
        .filter(|e| !e.is_empty());
        Ok(Self {
            service_name: service_name.to_owned(),
            log_format: env.shared("LOG_FORMAT", LogFormat::Pretty)?,
            log_filter: filter,
            otlp_endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        let cases = [
            ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
            (
                "postgres://app:s3cr%40t@db:5432/users",
                "postgres://app:***@db:5432/users",
            ),
            (
                "amqp://guest:guest@mq:5672/%2f",
                "amqp://guest:***@mq:5672/%2f",
            ),
            ("rediss://user:p@ss:word@h:1", "rediss://user:***@h:1"),
            (
                "postgres://db/x?user=a&password=b&sslmode=require",
                "postgres://db/x?user=a&password=***&sslmode=require",
            ),
            ("redis://redis:6379", "redis://redis:6379"),
            ("redis://only-user@h", "redis://only-user@h"),
            ("sqlite://data/users.db", "sqlite://data/users.db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
            let secret = SecretUrl::new(url);
            assert_eq!(secret.to_string(), shown);
            assert!(format!("{secret:?}").contains(shown));
            assert_eq!(secret.expose(), url);
        }
    }

    const USERS: ServiceDefaults = ServiceDefaults {
        name: "users",
        http_port: 8081,
        grpc_port: Some(50051),
    };

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_map("USERS", vars.iter().copied())
    }

    #[test]
    fn empty_environment_gives_documented_defaults() {
        let config = ServiceConfig::from_env(&env(&[]), USERS).unwrap();
        assert_eq!(config.http_addr, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(config.grpc_addr, Some("0.0.0.0:50051".parse().unwrap()));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(config.advertise_host, "127.0.0.1");
        assert_eq!(config.instance_id, "users-127.0.0.1-8081");
        assert_eq!(config.telemetry.log_format, LogFormat::Pretty);
        assert_eq!(config.telemetry.log_filter, "info,actix_server=warn");
        assert_eq!(config.telemetry.otlp_endpoint, None);
        assert!(matches!(config.discovery, DiscoveryConfig::Static { .. }));
    }

    #[test]
    fn service_variable_overrides_default() {
        let config = ServiceConfig::from_env(
            &env(&[
                ("USERS_HTTP_ADDR", "127.0.0.1:9000"),
                ("USERS_SHUTDOWN_TIMEOUT", "1500ms"),
                ("USERS_LOG_FORMAT", "json"),
            ]),
            USERS,
        )
        .unwrap();
        assert_eq!(config.http_addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.shutdown_timeout, Duration::from_millis(1500));
        assert_eq!(config.telemetry.log_format, LogFormat::Json);
    }

    #[test]
    fn platform_variable_applies_to_shared_keys_and_service_variable_wins() {
        let vars = [
            ("PLATFORM_LOG_FORMAT", "json"),
            ("PLATFORM_SHUTDOWN_TIMEOUT", "5s"),
            ("USERS_SHUTDOWN_TIMEOUT", "7s"),
        ];
        let config = ServiceConfig::from_env(&env(&vars), USERS).unwrap();
        assert_eq!(config.telemetry.log_format, LogFormat::Json);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(7));
    }

    #[test]
    fn platform_variable_does_not_apply_to_per_service_addresses() {
        let config =
            ServiceConfig::from_env(&env(&[("PLATFORM_HTTP_ADDR", "127.0.0.1:1")]), USERS).unwrap();
        assert_eq!(config.http_addr.port(), 8081);
    }

    #[test]
    fn invalid_value_names_the_variable() {
        let err = ServiceConfig::from_env(&env(&[("USERS_HTTP_ADDR", "not-an-address")]), USERS)
            .unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("USERS_HTTP_ADDR: invalid value \"not-an-address\""));

        let err = ServiceConfig::from_env(&env(&[("PLATFORM_SHUTDOWN_TIMEOUT", "soon")]), USERS)
            .unwrap_err();
        assert!(
            err.to_string().starts_with("PLATFORM_SHUTDOWN_TIMEOUT:"),
            "{err}"
        );
    }

    #[test]
    fn zero_workers_is_rejected() {
        let err = ServiceConfig::from_env(&env(&[("USERS_HTTP_WORKERS", "0")]), USERS).unwrap_err();
        assert!(err.to_string().contains("USERS_HTTP_WORKERS"));
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        let parse = |s| Duration::from_env_value(s);
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse("3 weeks").is_err());
        assert!(parse("").is_err());
        assert!(parse("99999999999999s").is_err());
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }
}
