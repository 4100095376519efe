//! Service discovery: where the instances of a service are, and which are
//! healthy.
//!
//! [`Registry`] is the one interface; [`ConsulRegistry`] talks to a Consul
//! agent in production and [`StaticRegistry`] serves addresses from
//! configuration for the embedded, single-machine mode. Which one a service
//! uses is decided by `DISCOVERY_URL`, never by code.

#[cfg(feature = "consul")]
mod consul;
mod static_registry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

#[cfg(feature = "consul")]
pub use consul::ConsulRegistry;
pub use static_registry::StaticRegistry;

use crate::config::{ConfigError, Env};

/// One running copy of a service, as other services see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub service: String,
    pub host: String,
    pub http_port: u16,
    pub grpc_port: Option<u16>,
    pub tags: Vec<String>,
}

impl Instance {
    /// `host:port` of the HTTP listener.
    pub fn http_authority(&self) -> String {
        authority(&self.host, self.http_port)
    }

    /// `host:port` of the gRPC listener, when the service has one.
    pub fn grpc_authority(&self) -> Option<String> {
        self.grpc_port.map(|port| authority(&self.host, port))
    }
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What an instance announces about itself when it starts.
#[derive(Clone, Debug)]
pub struct Registration {
    pub instance: Instance,
    /// URL the registry polls; the instance is routed to only while it
    /// answers 2xx.
    pub health_check_url: String,
    pub check_interval: Duration,
    pub check_timeout: Duration,
    /// A crashed instance that never deregistered is removed after this.
    pub deregister_critical_after: Duration,
    /// Port of the instance's admin listener (`/metrics`), for scrapers
    /// that follow the registry.
    pub admin_port: Option<u16>,
}

impl Registration {
    pub fn new(instance: Instance) -> Self {
        let health_check_url = format!("http://{}/health/ready", instance.http_authority());
        Self {
            instance,
            health_check_url,
            check_interval: Duration::from_secs(10),
            check_timeout: Duration::from_secs(5),
            deregister_critical_after: Duration::from_secs(60),
            admin_port: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot reach {backend} at {address}")]
    Unreachable {
        backend: &'static str,
        address: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{backend} refused {operation}: HTTP {status}: {body}")]
    Rejected {
        backend: &'static str,
        operation: &'static str,
        status: u16,
        body: String,
    },
    #[error("{backend} sent an answer that could not be read: {reason}")]
    BadResponse {
        backend: &'static str,
        reason: String,
    },
}

/// A live view of a service's healthy instances. `borrow()` is the current
/// list; `changed().await` waits for the next one.
pub type InstanceWatch = watch::Receiver<Vec<Instance>>;

#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Short name for logs and metrics (`consul`, `static`).
    fn backend(&self) -> &'static str;

    async fn register(&self, registration: &Registration) -> Result<(), DiscoveryError>;

    async fn deregister(&self, instance_id: &str) -> Result<(), DiscoveryError>;

    /// Instances of `service` whose health checks pass right now.
    async fn healthy_instances(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError>;

    /// Follows `service`: the receiver is updated whenever the set of healthy
    /// instances changes. Following stops when every receiver is dropped.
    fn watch(&self, service: &str) -> InstanceWatch;

    /// Whether the registry answers at all; used by readiness checks.
    async fn ping(&self) -> Result<(), DiscoveryError>;
}

/// Which registry to use, from `DISCOVERY_URL`.
#[derive(Clone, Debug)]
pub enum DiscoveryConfig {
    /// `static`: addresses listed in `STATIC_SERVICES`.
    Static { services: Vec<Instance> },
    /// `consul://host:port` (or `http://`/`https://` to a Consul agent).
    #[cfg(feature = "consul")]
    Consul {
        address: String,
        token: Option<crate::config::Secret>,
        tags: Vec<String>,
        timeouts: crate::clients::Timeouts,
    },
}

impl DiscoveryConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url: String = env.shared("DISCOVERY_URL", "static".to_owned())?;
        let invalid = |reason: &str| ConfigError::Invalid {
            var: env.var_name("DISCOVERY_URL"),
            value: url.clone(),
            reason: reason.to_owned(),
        };
        if url == "static" || url == "static:" {
            let raw: String = env.shared("STATIC_SERVICES", String::new())?;
            let services = parse_static_services(&raw).map_err(|reason| ConfigError::Invalid {
                var: env.var_name("STATIC_SERVICES"),
                value: raw.clone(),
                reason,
            })?;
            return Ok(Self::Static { services });
        }
        let address = if let Some(rest) = url.strip_prefix("consul://") {
            format!("http://{rest}")
        } else if url.starts_with("http://") || url.starts_with("https://") {
            url.clone()
        } else {
            return Err(invalid(
                "expected static, consul://host:port or http(s)://host:port",
            ));
        };
        if address.split("://").nth(1).is_none_or(str::is_empty) {
            return Err(invalid("missing the Consul host"));
        }
        #[cfg(not(feature = "consul"))]
        return Err(invalid(
            "this binary is built without Consul (the common crate's `consul` feature)",
        ));
        #[cfg(feature = "consul")]
        {
            let tags: String = env.shared("DISCOVERY_TAGS", String::new())?;
            let defaults = consul::DEFAULT_TIMEOUTS;
            let timeouts = crate::clients::Timeouts {
                connect: env.shared("DISCOVERY_CONNECT_TIMEOUT", defaults.connect)?,
                request: env.shared("DISCOVERY_REQUEST_TIMEOUT", defaults.request)?,
            };
            Ok(Self::Consul {
                timeouts,
                address: address.trim_end_matches('/').to_owned(),
                token: env.shared_optional("CONSUL_TOKEN")?,
                tags: tags
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        }
    }

    /// Builds the configured registry.
    pub fn connect(&self) -> Arc<dyn Registry> {
        match self {
            Self::Static { services } => Arc::new(StaticRegistry::new(services.clone())),
            #[cfg(feature = "consul")]
            Self::Consul {
                address,
                token,
                timeouts,
                ..
            } => Arc::new(ConsulRegistry::with_timeouts(
                address.clone(),
                token.clone(),
                consul::BLOCKING_WAIT,
                *timeouts,
            )),
        }
    }

    /// Tags every registration of this process carries.
    pub fn tags(&self) -> &[String] {
        match self {
            Self::Static { .. } => &[],
            #[cfg(feature = "consul")]
            Self::Consul { tags, .. } => tags,
        }
    }
}

/// Parses `name=host:http_port[/grpc_port]` entries separated by commas,
/// e.g. `users=10.0.0.5:8081/50051,gateway=10.0.0.9:8080`. A service listed
/// several times has several instances.
pub fn parse_static_services(raw: &str) -> Result<Vec<Instance>, String> {
    let mut instances = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addr) = entry
            .split_once('=')
            .ok_or_else(|| format!("entry {entry:?} is not name=host:port[/grpc_port]"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("entry {entry:?} has no service name"));
        }
        let (http, grpc) = match addr.split_once('/') {
            Some((http, grpc)) => (http, Some(grpc)),
            None => (addr, None),
        };
        let (host, http_port) = http
            .rsplit_once(':')
            .ok_or_else(|| format!("entry {entry:?} has no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("entry {entry:?} has no host"));
        }
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("entry {entry:?} has an invalid port {p:?}"))
        };
        let http_port = port(http_port)?;
        let grpc_port = grpc.map(port).transpose()?;
        let n = seen.entry(name.to_owned()).or_default();
        *n += 1;
        instances.push(Instance {
            id: format!("{name}-static-{n}"),
            service: name.to_owned(),
            host: host.to_owned(),
            http_port,
            grpc_port,
            tags: Vec::new(),
        });
    }
    Ok(instances)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_services_parse_with_and_without_grpc_ports() {
        let list = parse_static_services(
            "users=10.0.0.5:8081/50051, users=10.0.0.6:8081/50051,gateway=[::1]:8080",
        )
        .unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].id, "users-static-1");
        assert_eq!(list[1].id, "users-static-2");
        assert_eq!(list[1].grpc_authority().as_deref(), Some("10.0.0.6:50051"));
        assert_eq!(list[2].host, "::1");
        assert_eq!(list[2].http_authority(), "[::1]:8080");
        assert_eq!(list[2].grpc_port, None);
    }

    #[test]
    fn static_services_reject_malformed_entries() {
        for bad in [
            "users",
            "=1.2.3.4:1",
            "users=1.2.3.4",
            "users=1.2.3.4:http",
            "users=:80",
            "users=h:1/x",
        ] {
            assert!(
                parse_static_services(bad).is_err(),
                "{bad} should be rejected"
            );
        }
        assert_eq!(parse_static_services("").unwrap(), vec![]);
    }

    #[cfg(feature = "consul")]
    #[test]
    fn discovery_url_selects_backend() {
        let env = Env::from_map(
            "USERS",
            [
                ("PLATFORM_DISCOVERY_URL", "consul://consul.internal:8500"),
                ("USERS_DISCOVERY_TAGS", "blue, canary"),
                ("PLATFORM_DISCOVERY_REQUEST_TIMEOUT", "2s"),
            ],
        );
        match DiscoveryConfig::from_env(&env).unwrap() {
            DiscoveryConfig::Consul {
                address,
                tags,
                token,
                timeouts,
            } => {
                assert_eq!(address, "http://consul.internal:8500");
                assert_eq!(tags, ["blue", "canary"]);
                assert!(token.is_none());
                assert_eq!(timeouts.connect, Duration::from_secs(5));
                assert_eq!(timeouts.request, Duration::from_secs(2));
            }
            other => panic!("expected consul, got {other:?}"),
        }
    }

    #[test]
    fn unknown_discovery_scheme_names_the_variable() {
        let env = Env::from_map("CHAT", [("CHAT_DISCOVERY_URL", "zookeeper://zk:2181")]);
        let err = DiscoveryConfig::from_env(&env).unwrap_err();
        assert!(err.to_string().starts_with("CHAT_DISCOVERY_URL:"), "{err}");
        let env = Env::from_map("CHAT", [("CHAT_STATIC_SERVICES", "users")]);
        let err = DiscoveryConfig::from_env(&env).unwrap_err();
        assert!(
            err.to_string().starts_with("CHAT_STATIC_SERVICES:"),
            "{err}"
        );
    }
}
