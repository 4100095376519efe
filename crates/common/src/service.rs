//! What a service is to whatever runs it.
//!
//! Every service crate implements [`Service`] once: its name, its
//! environment prefix, how its configuration is read and how it is built
//! onto a [`ServiceHostBuilder`]. Services of the standard shape do that
//! with [`service!`](crate::service!). Its binary is then [`main`], and the
//! all-in-one runner and the end-to-end tests hold a list of
//! [`ServiceEntry`]s, so that a new service is one more entry rather than
//! one more arm in every place that lists them.
//!
//! [`Shared`] is what the all-in-one runner hands every service so that
//! they find each other in one process: one registry, one event bus. A
//! standalone binary passes [`Shared::default`] and each service connects
//! to the backends its own configuration names.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{ConfigError, Env, ServiceConfig};
use crate::discovery::{DiscoveryConfig, Registry};
use crate::events::{EventBus, EventBusConfig, EventBusError};
use crate::server::ServiceHostBuilder;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Backends the services of one process share. Empty for a standalone
/// service; the lock service joins these fields when it exists.
///
/// A shared backend stands in for the *embedded* one only: a service whose
/// own configuration names a real server (Consul, Kafka) connects to it,
/// so a per-service setting is never silently replaced.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Shared {
    /// Every service registers here and the gateway finds them here,
    /// instead of each opening the registry its configuration names.
    pub registry: Option<Arc<dyn Registry>>,
    /// Events one service publishes reach consumers in the others.
    pub events: Option<Arc<dyn EventBus>>,
    /// One in-process job queue for every service (each keeps its own job
    /// store; kinds are named per service).
    pub jobs: Option<Arc<dyn crate::jobs::MessageQueue>>,
}

impl Shared {
    /// Every service registers in, and finds the others in, `registry`.
    pub fn with_registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Every service publishes to and consumes from `events`.
    pub fn with_events(mut self, events: Arc<dyn EventBus>) -> Self {
        self.events = Some(events);
        self
    }

    /// Every service's in-process jobs go through `queue`.
    pub fn with_jobs(mut self, queue: Arc<dyn crate::jobs::MessageQueue>) -> Self {
        self.jobs = Some(queue);
        self
    }

    /// The shared registry for static discovery, else the one `config`
    /// names.
    pub fn registry_or(&self, config: &DiscoveryConfig) -> Arc<dyn Registry> {
        match (config, &self.registry) {
            (DiscoveryConfig::Static { .. }, Some(registry)) => registry.clone(),
            _ => config.connect(),
        }
    }

    /// The shared event bus in place of an in-process one, else the bus
    /// `config` names.
    pub fn event_bus_or(
        &self,
        config: &EventBusConfig,
    ) -> Result<Arc<dyn EventBus>, EventBusError> {
        match (config, &self.events) {
            (EventBusConfig::Memory, Some(bus)) => Ok(bus.clone()),
            _ => config.connect(),
        }
    }

    /// A host for the service configured by `config`, registering in
    /// [`Self::registry_or`]. Every service starts its host here.
    pub fn host(&self, config: ServiceConfig) -> ServiceHostBuilder {
        let registry = self.registry_or(&config.discovery);
        crate::server::ServiceHost::builder(config).registry(registry)
    }
}

/// One service of the platform.
pub trait Service: 'static {
    /// Name in discovery, logs and metrics (`users`).
    const NAME: &'static str;
    /// Prefix of its environment variables (`USERS`).
    const ENV_PREFIX: &'static str;

    type Config: Send + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads the configuration; `env` already carries [`Self::ENV_PREFIX`].
    fn config(env: &Env) -> Result<Self::Config, ConfigError>;

    /// The host settings inside the service's configuration.
    fn service_config(config: &Self::Config) -> &ServiceConfig;

    /// Connects the service's backends and puts its routes, gRPC services,
    /// readiness checks and background tasks on a host (not yet bound).
    fn build(
        config: Self::Config,
        shared: &Shared,
    ) -> impl Future<Output = Result<ServiceHostBuilder, Self::Error>> + Send;
}

/// A service, configured and waiting to be built.
pub type Prepared = Box<
    dyn FnOnce(Shared) -> Pin<Box<dyn Future<Output = Result<ServiceHostBuilder, BoxError>> + Send>>
        + Send,
>;

/// A [`Service`] with its types erased, so that several can sit in one
/// list.
#[derive(Clone, Copy)]
pub struct ServiceEntry {
    pub name: &'static str,
    pub env_prefix: &'static str,
    prepare: fn(&Env) -> Result<Prepared, ConfigError>,
}

impl std::fmt::Debug for ServiceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceEntry")
            .field("name", &self.name)
            .field("env_prefix", &self.env_prefix)
            .finish_non_exhaustive()
    }
}

impl ServiceEntry {
    pub const fn of<S: Service>() -> Self {
        Self {
            name: S::NAME,
            env_prefix: S::ENV_PREFIX,
            prepare: prepare::<S>,
        }
    }

    /// Reads this service's configuration from `env` (any prefix: this
    /// entry's is applied), so a configuration error is reported before
    /// anything connects.
    pub fn prepare(&self, env: &Env) -> Result<Prepared, ConfigError> {
        (self.prepare)(env)
    }
}

fn prepare<S: Service>(env: &Env) -> Result<Prepared, ConfigError> {
    let config = S::config(&env.with_prefix(S::ENV_PREFIX))?;
    Ok(Box::new(move |shared: Shared| {
        Box::pin(async move { S::build(config, &shared).await.map_err(BoxError::from) })
    }))
}

/// A service's whole binary: reads its configuration from the process
/// environment, installs telemetry, builds and binds the service, serves
/// until SIGTERM or SIGINT, drains, and reports how it ended.
pub async fn main<S: Service>() -> ExitCode {
    crate::exit::report(run::<S>().await)
}

async fn run<S: Service>() -> anyhow::Result<()> {
    let config = S::config(&Env::from_process(S::ENV_PREFIX))?;
    let telemetry = S::service_config(&config).telemetry.clone();
    crate::server::serve(&telemetry, async {
        let builder = S::build(config, &Shared::default()).await?;
        Ok(builder.build()?)
    })
    .await
}

/// Declares a service of the standard shape: `config.rs` with `Config`
/// (a `service: ServiceConfig` field and `Config::from_source`),
/// `ENV_PREFIX` and `DEFAULTS`; `startup.rs` with `build(config, &Shared)`
/// and `StartError`. Expands to the marker type, its [`Service`] impl and
/// `pub const SERVICE`, the entry for the all-in-one runner's list.
///
/// ```text
/// common::service! {
///     /// The users service.
///     pub struct Users;
/// }
/// ```
// `crate::` is meant: the paths name the calling service's own modules.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! service {
    ($(#[$meta:meta])* pub struct $name:ident;) => {
        $(#[$meta])*
        pub struct $name;

        impl $crate::service::Service for $name {
            const NAME: &'static str = crate::config::DEFAULTS.name;
            const ENV_PREFIX: &'static str = crate::config::ENV_PREFIX;
            type Config = crate::config::Config;
            type Error = crate::startup::StartError;

            fn config(
                env: &$crate::config::Env,
            ) -> ::std::result::Result<Self::Config, $crate::config::ConfigError> {
                crate::config::Config::from_source(env)
            }

            fn service_config(config: &Self::Config) -> &$crate::config::ServiceConfig {
                &config.service
            }

            async fn build(
                config: Self::Config,
                shared: &$crate::service::Shared,
            ) -> ::std::result::Result<$crate::server::ServiceHostBuilder, Self::Error> {
                crate::startup::build(config, shared).await
            }
        }

        /// This service in the all-in-one runner's list.
        pub const SERVICE: $crate::service::ServiceEntry =
            $crate::service::ServiceEntry::of::<$name>();
    };
}
