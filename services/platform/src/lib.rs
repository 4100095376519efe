//! The all-in-one runner: every service on one Tokio runtime.
//!
//! Each service keeps its own configuration prefix and its own ports, so the
//! process behaves like six processes on one machine; only the process is
//! shared. With static discovery (the default) the services share one
//! in-process registry and find each other at the ports they actually bound,
//! so even `*_HTTP_ADDR=127.0.0.1:0` works. With `PLATFORM_DISCOVERY_URL`
//! pointing at Consul, each registers there as usual. Without Kafka
//! (`PLATFORM_KAFKA_BROKERS`) the services share one in-process event bus.

pub mod cli;

use std::sync::Arc;

use common::config::{ConfigError, Env};
use common::discovery::{DiscoveryConfig, StaticRegistry};
use common::events::{EventBusConfig, MemoryBus};
use common::server::ServiceHost;
use common::service::{BoxError, Prepared, ServiceEntry, Shared};
use common::shutdown::CancellationToken;
use common::telemetry::TelemetryConfig;
use tokio::task::JoinSet;

/// Every service of the platform, in start order. A new service is one
/// more line here (and in the README's "Adding a service" checklist).
pub const SERVICES: &[ServiceEntry] = &[
    users::SERVICE,
    chat::SERVICE,
    notifications::SERVICE,
    search::SERVICE,
    storage::SERVICE,
    gateway::SERVICE,
];

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the {service} service failed")]
    Service {
        service: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("a service task panicked: {0}")]
    Panicked(String),
}

/// Every service's configuration, each read with its own prefix, and what
/// they will share.
pub struct PlatformConfig {
    pub telemetry: TelemetryConfig,
    discovery: DiscoveryConfig,
    events: EventBusConfig,
    services: Vec<(&'static str, Prepared)>,
}

impl PlatformConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Env::from_process(common::config::SHARED_PREFIX))
    }

    pub fn from_source(env: &Env) -> Result<Self, ConfigError> {
        let env = with_shared_signing_key(env)?;
        let services = SERVICES
            .iter()
            .map(|entry| Ok((entry.name, entry.prepare(&env)?)))
            .collect::<Result<_, ConfigError>>()?;
        let platform = env.with_prefix(common::config::SHARED_PREFIX);
        Ok(Self {
            telemetry: TelemetryConfig::from_env(&platform, "platform")?,
            discovery: DiscoveryConfig::from_env(&platform)?,
            events: EventBusConfig::from_env(&platform)?,
            services,
        })
    }
}

/// The services that verify the gateway's access tokens.
const VERIFIERS: [&str; 2] = [chat::config::ENV_PREFIX, notifications::config::ENV_PREFIX];

/// The gateway signs access tokens and chat and notifications verify them,
/// so in one process each verifier gets the gateway's key unless it has
/// its own; and when the gateway has none in development (where it would
/// make one up), the platform makes one up for all of them.
fn with_shared_signing_key(env: &Env) -> Result<Env, ConfigError> {
    let key = |env: &Env, prefix: &str| -> Result<Option<String>, ConfigError> {
        Ok(env
            .with_prefix(prefix)
            .shared_optional::<String>("JWT_SECRET")?
            .filter(|key| !key.is_empty()))
    };
    let mut env = env.clone();
    let gateway_key = match key(&env, gateway::config::ENV_PREFIX)? {
        Some(key) => key,
        None => {
            let gateway = env.with_prefix(gateway::config::ENV_PREFIX);
            if gateway.shared("ENVIRONMENT", String::new())? == "production" {
                // The gateway refuses to start without a key; let it say so.
                return Ok(env);
            }
            let made_up = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            env = env.with_var("PLATFORM_JWT_SECRET", made_up.clone());
            made_up
        }
    };
    for verifier in VERIFIERS {
        if key(&env, verifier)?.is_none() {
            env = env.with_var(&format!("{verifier}_JWT_SECRET"), gateway_key.clone());
        }
    }
    Ok(env)
}

/// All services, bound and ready to serve.
pub struct Platform {
    hosts: Vec<ServiceHost>,
}

impl Platform {
    pub async fn build(config: PlatformConfig) -> Result<Self, PlatformError> {
        // Before any service is built: handles made while building are
        // bound to the recorder installed then (see `common::server::serve`).
        common::metrics::install().map_err(|e| PlatformError::Service {
            service: "platform",
            source: e.into(),
        })?;
        // One registry for everyone when discovery is static; its
        // configured list seeds it (services add themselves on start).
        // (A service whose own configuration names Consul or Kafka still
        // connects there: see `Shared`.)
        let mut shared = Shared::default();
        if let DiscoveryConfig::Static { services } = &config.discovery {
            shared = shared.with_registry(Arc::new(StaticRegistry::new(services.clone())));
        }
        // Likewise one in-process event bus, so events published by one
        // service reach consumers in the others.
        if let EventBusConfig::Memory = &config.events {
            shared = shared.with_events(Arc::new(MemoryBus::default()));
        }
        let mut hosts = Vec::with_capacity(config.services.len());
        for (service, prepared) in config.services {
            let failed = |source: BoxError| PlatformError::Service { service, source };
            let builder = prepared(shared.clone()).await.map_err(failed)?;
            let host = builder.build().map_err(|e| failed(e.into()))?;
            hosts.push(host);
        }
        Ok(Self { hosts })
    }

    pub fn hosts(&self) -> &[ServiceHost] {
        &self.hosts
    }

    /// Serves every service until `shutdown` is cancelled. If one service
    /// fails, the others are stopped too and the first failure is returned.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), PlatformError> {
        let mut running = JoinSet::new();
        for host in self.hosts {
            let stop = shutdown.clone();
            running.spawn(async move {
                let service = host.name();
                let result = host.run_until_stopped(stop.cancelled_owned()).await;
                (service, result)
            });
        }
        let mut first_error = None;
        while let Some(joined) = running.join_next().await {
            let failure = match joined {
                Ok((_, Ok(()))) => continue,
                Ok((service, Err(source))) => PlatformError::Service {
                    service,
                    source: source.into(),
                },
                Err(panic) => PlatformError::Panicked(panic.to_string()),
            };
            tracing::error!(error = %common::exit::chain(&failure), "service failed; stopping the platform");
            shutdown.cancel();
            first_error.get_or_insert(failure);
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(vars: &[(&str, &str)]) -> (Option<String>, Option<String>) {
        let env = with_shared_signing_key(&Env::from_map("PLATFORM", vars.iter().copied()))
            .expect("valid");
        let key = |prefix: &str| {
            env.with_prefix(prefix)
                .shared_optional::<String>("JWT_SECRET")
                .expect("valid")
        };
        (key("GATEWAY"), key("CHAT"))
    }

    #[test]
    fn chat_verifies_with_the_gateways_key_unless_it_has_its_own() {
        let gateway_key = "g".repeat(32);
        assert_eq!(
            keys(&[("GATEWAY_JWT_SECRET", &gateway_key)]),
            (Some(gateway_key.clone()), Some(gateway_key.clone()))
        );
        let chat_key = "c".repeat(32);
        assert_eq!(
            keys(&[
                ("GATEWAY_JWT_SECRET", &gateway_key),
                ("CHAT_JWT_SECRET", &chat_key)
            ]),
            (Some(gateway_key), Some(chat_key))
        );
    }

    #[test]
    fn notifications_verifies_with_the_gateways_key_unless_it_has_its_own() {
        let gateway_key = "g".repeat(32);
        let own = "n".repeat(32);
        let env = with_shared_signing_key(&Env::from_map(
            "PLATFORM",
            [
                ("GATEWAY_JWT_SECRET", gateway_key.as_str()),
                ("NOTIFICATIONS_JWT_SECRET", own.as_str()),
            ],
        ))
        .expect("valid");
        let key = |prefix: &str| {
            env.with_prefix(prefix)
                .shared_optional::<String>("JWT_SECRET")
                .expect("valid")
        };
        assert_eq!(key("NOTIFICATIONS"), Some(own));
        assert_eq!(key("CHAT"), Some(gateway_key));
    }

    #[test]
    fn without_any_key_development_makes_one_for_all_and_production_does_not() {
        let env = with_shared_signing_key(&Env::from_map(
            "PLATFORM",
            std::iter::empty::<(&str, &str)>(),
        ))
        .expect("valid");
        let key = |prefix: &str| {
            env.with_prefix(prefix)
                .shared_optional::<String>("JWT_SECRET")
                .expect("valid")
        };
        let gateway = key("GATEWAY");
        assert!(gateway.as_ref().is_some_and(|k| k.len() >= 32));
        assert_eq!(gateway, key("CHAT"));
        assert_eq!(gateway, key("NOTIFICATIONS"));
        assert_eq!(
            keys(&[("PLATFORM_ENVIRONMENT", "production")]),
            (None, None)
        );
    }
}
