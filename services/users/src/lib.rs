//! The users service: accounts, posts and comments; the platform's source
//! of truth.
//!
//! Every change is an event in the event store ([`store`]), applied to the
//! read models and queued in the outbox in the same transaction; a relay
//! publishes the outbox to the event bus. Single reads go through the
//! multi-level cache ([`views`]). The gRPC API is in [`grpc`].
//!
//! Configuration is read from `USERS_*` variables (see the README).

pub mod domain;
pub mod events;
pub mod grpc;
pub mod outbox;
pub mod password;
pub mod store;
pub mod views;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::cache::{CacheConfig, MultilevelCache, RedisConnectError, RedisLevel};
use common::config::{ConfigError, Env, ServiceConfig, ServiceDefaults};
use common::events::{EventBus, EventBusConfig, EventBusError};
use common::health::ReadinessCheck;
use common::server::{ServiceHost, ServiceHostBuilder};
use platform_proto::posts::v1::comment_service_server::CommentServiceServer;
use platform_proto::posts::v1::post_service_server::PostServiceServer;
use platform_proto::users::v1::user_service_server::UserServiceServer;

use crate::outbox::{OutboxRelay, RelayConfig};
use crate::store::{Store, StoreError};
use crate::views::Views;

/// Prefix of this service's environment variables.
pub const ENV_PREFIX: &str = "USERS";

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "users",
    http_port: 8081,
    grpc_port: Some(50051),
};

/// Largest gRPC message accepted; the largest valid request (a post of
/// 20,000 characters) is far below it.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// `postgres://…` in production; a SQLite file by default.
    pub database_url: String,
    pub database_max_connections: u32,
    /// Kafka when `KAFKA_BROKERS` is set, otherwise the in-process bus.
    pub events: EventBusConfig,
    pub relay: RelayConfig,
    /// Redis for the shared cache level; none means L1 + disk only.
    pub redis_url: Option<String>,
    pub cache: CacheConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Env::from_process(ENV_PREFIX))
    }

    pub fn from_source(env: &Env) -> Result<Self, ConfigError> {
        let service = ServiceConfig::from_env(env, DEFAULTS)?;
        Ok(Self {
            database_url: env.get("DATABASE_URL", "sqlite://data/users.db".to_owned())?,
            database_max_connections: env.get("DATABASE_MAX_CONNECTIONS", 10)?,
            events: EventBusConfig::from_env(env)?,
            relay: RelayConfig {
                batch: env.get("OUTBOX_BATCH", 256)?,
                idle_poll: env.get("OUTBOX_POLL", Duration::from_millis(50))?,
                lease: Duration::from_secs(10),
                holder: service.instance_id.clone(),
            },
            redis_url: env
                .shared_optional::<String>("REDIS_URL")?
                .filter(|u| !u.is_empty()),
            cache: CacheConfig {
                name: "users",
                namespace: env.get("CACHE_NAMESPACE", "users".to_owned())?,
                l1_capacity: env.get("CACHE_L1_CAPACITY", 10_000)?,
                l1_ttl: env.get("CACHE_L1_TTL", Duration::from_secs(5))?,
                l2_ttl: env.get("CACHE_L2_TTL", Duration::from_secs(300))?,
                l3_ttl: env.get("CACHE_L3_TTL", Duration::from_secs(3600))?,
                disk_dir: Some(env.get("CACHE_DIR", PathBuf::from("data/cache/users"))?),
            },
            service,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the users database")]
    Store(#[from] StoreError),
    #[error("cannot connect to the event bus")]
    Events(#[from] EventBusError),
    #[error("cannot connect the cache to Redis")]
    Redis(#[from] RedisConnectError),
}

struct DatabaseCheck(Store);

#[async_trait]
impl ReadinessCheck for DatabaseCheck {
    fn name(&self) -> &str {
        "database"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| common::exit::chain(&e))
    }
}

struct RedisCheck(RedisLevel);

#[async_trait]
impl ReadinessCheck for RedisCheck {
    fn name(&self) -> &str {
        "redis"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

/// The service's gRPC API, readiness checks and background work on a host.
pub async fn host(config: Config) -> Result<ServiceHostBuilder, StartError> {
    host_with_bus(config, None).await
}

/// Like [`host`], publishing to `bus` instead of the configured one: the
/// all-in-one runner gives every service the same in-process bus.
pub async fn host_with_bus(
    config: Config,
    bus: Option<Arc<dyn EventBus>>,
) -> Result<ServiceHostBuilder, StartError> {
    let store = Store::connect(&config.database_url, config.database_max_connections).await?;
    let redis = match &config.redis_url {
        Some(url) => Some(RedisLevel::connect(url).await?),
        None => None,
    };
    let cache = MultilevelCache::new(config.cache, redis.clone()).await;
    let views = Views::new(store.clone(), cache);
    let bus = match bus {
        Some(bus) => bus,
        None => config.events.connect()?,
    };
    let relay = OutboxRelay::new(store.clone(), bus, config.relay);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(platform_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .ok();
    let mut builder = ServiceHost::builder(config.service)
        .readiness_check(Arc::new(DatabaseCheck(store.clone())))
        .task("outbox-relay", move |stop| relay.run(stop))
        .grpc_service(
            UserServiceServer::new(grpc::UserApi::new(store.clone(), views.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .grpc_service(
            PostServiceServer::new(grpc::PostApi::new(store.clone(), views))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .grpc_service(
            CommentServiceServer::new(grpc::CommentApi::new(store))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
    if let Some(redis) = redis {
        builder = builder.readiness_check(Arc::new(RedisCheck(redis)));
    }
    if let Some(reflection) = reflection {
        builder = builder.grpc_service(reflection);
    }
    Ok(builder)
}
