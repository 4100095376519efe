//! The all-in-one runner: every service on one Tokio runtime.
//!
//! Each service keeps its own configuration prefix and its own ports, so the
//! process behaves like six processes on one machine; only the process is
//! shared. With static discovery (the default) the services share one
//! in-process registry and find each other at the ports they actually bound,
//! so even `*_HTTP_ADDR=127.0.0.1:0` works. With `PLATFORM_DISCOVERY_URL`
//! pointing at Consul, each registers there as usual. Without Kafka
//! (`PLATFORM_KAFKA_BROKERS`) the services share one in-process event bus.

use std::sync::Arc;

use common::config::{ConfigError, Env};
use common::discovery::{DiscoveryConfig, Registry, StaticRegistry};
use common::events::{EventBus, EventBusConfig, MemoryBus};
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

/// The gateway signs access tokens and chat verifies them. Given no key,
/// the gateway makes one up in development; in one process, chat must then
/// get the same one, so the platform makes it up for both.
fn with_shared_signing_key(env: &Env) -> Result<Env, ConfigError> {
    let gateway = env.with_prefix(gateway::config::ENV_PREFIX);
    let configured = gateway
        .shared_optional::<String>("JWT_SECRET")?
        .is_some_and(|key| !key.is_empty());
    let production = gateway.shared("ENVIRONMENT", String::new())? == "production";
    if configured || production {
        // In production the gateway insists on a configured key itself.
        return Ok(env.clone());
    }
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    Ok(env.with_var("PLATFORM_JWT_SECRET", key))
}

/// All services, bound and ready to serve.
pub struct Platform {
    hosts: Vec<ServiceHost>,
}

impl Platform {
    pub async fn build(config: PlatformConfig) -> Result<Self, PlatformError> {
        // One registry for everyone when discovery is static; its
        // configured list seeds it (services add themselves on start).
        let registry: Option<Arc<dyn Registry>> = match &config.discovery {
            DiscoveryConfig::Static { services } => {
                Some(Arc::new(StaticRegistry::new(services.clone())))
            }
            DiscoveryConfig::Consul { .. } => None,
        };
        // Likewise one in-process event bus, so events published by one
        // service reach consumers in the others.
        let events: Option<Arc<dyn EventBus>> = match &config.events {
            EventBusConfig::Memory => Some(Arc::new(MemoryBus::default())),
            EventBusConfig::Kafka(_) => None,
        };
        let shared = Shared::new(registry, events);
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
