//! `USERS_*` settings; every one has a default (README, "Configuration").

use std::path::PathBuf;
use std::time::Duration;

use common::cache::CacheConfig;
use common::config::{ConfigError, Env, SecretUrl, ServiceConfig, ServiceDefaults};
use common::events::EventBusConfig;

use crate::outbox::RelayConfig;
use crate::password::HashLimits;

/// Prefix of this service's environment variables.
pub const ENV_PREFIX: &str = "USERS";

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "users",
    http_port: 8081,
    grpc_port: Some(50051),
};

#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// `postgres://…` in production; a SQLite file by default.
    pub database_url: SecretUrl,
    pub database_max_connections: u32,
    pub database_timeouts: crate::store::DatabaseTimeouts,
    /// Kafka when `KAFKA_BROKERS` is set, otherwise the in-process bus.
    pub events: EventBusConfig,
    pub relay: RelayConfig,
    /// Redis for the shared cache level; none means L1 + disk only.
    pub redis_url: Option<SecretUrl>,
    pub redis: common::redis::RedisOptions,
    pub cache: CacheConfig,
    pub hashing: HashLimits,
}

impl Config {
    /// Reads `env`, which carries this service's prefix.
    pub fn from_source(env: &Env) -> Result<Self, ConfigError> {
        let service = ServiceConfig::from_env(env, DEFAULTS)?;
        let events = EventBusConfig::from_env(env)?;
        let publish_timeout = match &events {
            EventBusConfig::Kafka(kafka) => kafka.message_timeout,
            EventBusConfig::Memory => Duration::from_secs(5),
        };
        Ok(Self {
            database_url: env.get("DATABASE_URL", SecretUrl::new("sqlite://data/users.db"))?,
            database_max_connections: env.get("DATABASE_MAX_CONNECTIONS", 10)?,
            database_timeouts: {
                let defaults = crate::store::DatabaseTimeouts::default();
                crate::store::DatabaseTimeouts {
                    acquire: env.get("DATABASE_ACQUIRE_TIMEOUT", defaults.acquire)?,
                    statement: env.get("DATABASE_STATEMENT_TIMEOUT", defaults.statement)?,
                }
            },
            events,
            relay: RelayConfig {
                batch: env.get("OUTBOX_BATCH", 256)?,
                idle_poll: env.get("OUTBOX_POLL", Duration::from_millis(50))?,
                lease: env.get("OUTBOX_LEASE", RelayConfig::lease_for(publish_timeout))?,
                holder: service.instance_id.clone(),
                max_attempts: i32::try_from(env.get::<u32>("OUTBOX_MAX_ATTEMPTS", 10)?)
                    .unwrap_or(i32::MAX)
                    .max(1),
                retention: env.get("OUTBOX_RETENTION", Duration::from_secs(7 * 24 * 3600))?,
            },
            redis_url: env
                .shared_optional::<SecretUrl>("REDIS_URL")?
                .filter(|u| !u.is_empty()),
            redis: common::redis::RedisOptions::from_env(env)?,
            cache: CacheConfig {
                name: "users",
                namespace: env.get("CACHE_NAMESPACE", "users".to_owned())?,
                l1_capacity: env.get("CACHE_L1_CAPACITY", 10_000)?,
                l1_ttl: env.get("CACHE_L1_TTL", Duration::from_secs(5))?,
                l2_ttl: env.get("CACHE_L2_TTL", Duration::from_secs(300))?,
                l3_ttl: env.get("CACHE_L3_TTL", Duration::from_secs(3600))?,
                disk_dir: Some(env.get("CACHE_DIR", PathBuf::from("data/cache/users"))?),
                max_value_bytes: env.get(
                    "CACHE_MAX_VALUE_BYTES",
                    CacheConfig::DEFAULT_MAX_VALUE_BYTES,
                )?,
            },
            hashing: {
                let default = HashLimits::default();
                HashLimits {
                    concurrency: env.get("HASH_CONCURRENCY", default.concurrency)?,
                    queue: env.get("HASH_QUEUE", default.queue)?,
                }
            },
            service,
        })
    }
}
