//! The all-in-one runner: every service on one Tokio runtime.
//!
//! Each service keeps its own configuration prefix and its own ports, so the
//! process behaves like six processes on one machine; only the process is
//! shared. With static discovery (the default) the services share one
//! in-process registry and find each other at the ports they actually bound,
//! so even `*_HTTP_ADDR=127.0.0.1:0` works. With `PLATFORM_DISCOVERY_URL`
//! pointing at Consul, each registers there as usual. Without Kafka the
//! services share one in-process event bus.

use std::sync::Arc;

use common::config::{ConfigError, Env};
use common::discovery::{DiscoveryConfig, Registry, StaticRegistry};
use common::events::{EventBus, EventBusConfig, MemoryBus};
use common::server::{ServiceHost, ServiceHostBuilder};
use common::shutdown::CancellationToken;
use common::telemetry::TelemetryConfig;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the {service} service failed")]
    Service {
        service: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("a service task panicked: {0}")]
    Panicked(String),
}

/// Every service's configuration, each read with its own prefix.
pub struct PlatformConfig {
    pub telemetry: TelemetryConfig,
    pub users: users::Config,
    pub chat: chat::Config,
    pub notifications: notifications::Config,
    pub search: search::Config,
    pub storage: storage::Config,
    pub gateway: gateway::Config,
}

impl PlatformConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Env::from_process(common::config::SHARED_PREFIX))
    }

    pub fn from_source(env: &Env) -> Result<Self, ConfigError> {
        let gateway = gateway::Config::from_source(&env.with_prefix(gateway::ENV_PREFIX))?;
        let mut chat = chat::Config::from_source(&env.with_prefix(chat::ENV_PREFIX))?;
        // Chat verifies the tokens the gateway signs: in development the
        // gateway may have made its key up, so chat gets the same one.
        if chat.jwt_secret.is_none() {
            chat.jwt_secret = Some(gateway.jwt_secret.clone());
        }
        Ok(Self {
            telemetry: TelemetryConfig::from_env(env, "platform")?,
            users: users::Config::from_source(&env.with_prefix(users::ENV_PREFIX))?,
            chat,
            notifications: notifications::Config::from_source(
                &env.with_prefix(notifications::ENV_PREFIX),
            )?,
            search: search::Config::from_source(&env.with_prefix(search::ENV_PREFIX))?,
            storage: storage::Config::from_source(&env.with_prefix(storage::ENV_PREFIX))?,
            gateway,
        })
    }
}

/// All services, bound and ready to serve.
pub struct Platform {
    hosts: Vec<ServiceHost>,
}

impl Platform {
    pub async fn build(config: PlatformConfig) -> Result<Self, PlatformError> {
        // One registry for everyone when discovery is static; the gateway's
        // configured list seeds it (services add themselves on start).
        let shared: Option<Arc<dyn Registry>> = match &config.gateway.service.discovery {
            DiscoveryConfig::Static { services } => {
                Some(Arc::new(StaticRegistry::new(services.clone())))
            }
            DiscoveryConfig::Consul { .. } => None,
        };
        type Built = Result<ServiceHostBuilder, Box<dyn std::error::Error + Send + Sync>>;
        fn boxed<E: std::error::Error + Send + Sync + 'static>(
            built: Result<ServiceHostBuilder, E>,
        ) -> Built {
            built.map_err(Into::into)
        }
        // Likewise one in-process event bus, so events published by one
        // service reach consumers in the others.
        let bus: Option<Arc<dyn EventBus>> = match &config.users.events {
            EventBusConfig::Memory => Some(Arc::new(MemoryBus::default())),
            EventBusConfig::Kafka(_) => None,
        };
        let builders: [(&'static str, Built); 6] = [
            (
                "users",
                boxed(users::host_with_bus(config.users, bus.clone()).await),
            ),
            (
                "chat",
                boxed(chat::host_with_bus(config.chat, bus.clone()).await),
            ),
            (
                "notifications",
                boxed(notifications::host(config.notifications).await),
            ),
            ("search", boxed(search::host(config.search).await)),
            ("storage", boxed(storage::host(config.storage).await)),
            (
                "gateway",
                boxed(gateway::host_with_registry(config.gateway, shared.clone()).await),
            ),
        ];
        let mut hosts = Vec::with_capacity(builders.len());
        for (service, builder) in builders {
            let build = |builder: ServiceHostBuilder| {
                match &shared {
                    Some(registry) => builder.registry(registry.clone()).build(),
                    None => builder.build(),
                }
                .map_err(Into::into)
            };
            let host = builder
                .and_then(build)
                .map_err(|source| PlatformError::Service { service, source })?;
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
