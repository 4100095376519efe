//! `SEARCH_*` settings; every one has a default (README,
//! "Configuration").

use std::time::Duration;

use common::config::{ConfigError, Env, Secret, SecretUrl, ServiceConfig, ServiceDefaults};
use common::db::DatabaseTimeouts;
use common::events::EventBusConfig;
use common::jobs::JobsSettings;

/// Prefix of this service's environment variables.
pub const ENV_PREFIX: &str = "SEARCH";

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "search",
    http_port: 8084,
    grpc_port: Some(50054),
};

/// Where the index lives.
#[derive(Clone, Debug)]
pub enum IndexBackend {
    /// tantivy, under this directory.
    Embedded(std::path::PathBuf),
    /// An OpenSearch cluster at this URL.
    OpenSearch(SecretUrl),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// `INDEX_URL`: a directory (tantivy) or `http(s)://` (OpenSearch).
    pub index: IndexBackend,
    /// `INDEX`: OpenSearch's alias (and its indices' prefix).
    pub index_name: String,
    /// The seed's index settings, for OpenSearch.
    pub shards: u32,
    pub replicas: u32,
    /// Each request to OpenSearch.
    pub opensearch_timeout: Duration,
    /// How long a cursor's snapshot lives unused.
    pub cursor_keep_alive: Duration,
    /// The least time between two merges of a fragmented embedded index.
    pub compact_every: Duration,
    /// Kafka when `KAFKA_BROKERS` is set, otherwise the in-process bus.
    pub events: EventBusConfig,
    pub consumer_group: String,
    /// Most events written to the index in one commit, and how long the
    /// consumer waits for more once it has one.
    pub batch_size: usize,
    pub batch_wait: Duration,
    /// The job queue's records (the reindex job): a SQLite file by
    /// default, PostgreSQL shared by the replicas in production.
    pub database_url: SecretUrl,
    pub database_max_connections: u32,
    pub database_timeouts: DatabaseTimeouts,
    pub jobs: JobsSettings,
    /// Redis for the reindex lock shared by the replicas; none: in process.
    pub redis_url: Option<SecretUrl>,
    pub redis: common::redis::RedisOptions,
    /// Guards the reindex and jobs routes on the admin listener.
    pub admin_token: Option<Secret>,
    /// Connecting to the users service for a reindex's export, and waiting
    /// for each of its messages.
    pub users_timeout: Duration,
}

impl Config {
    /// Reads `env`, which carries this service's prefix.
    pub fn from_source(env: &Env) -> Result<Self, ConfigError> {
        let index_url: String = env.get("INDEX_URL", "data/search".to_owned())?;
        let index = if index_url.starts_with("http://") || index_url.starts_with("https://") {
            IndexBackend::OpenSearch(SecretUrl::new(index_url))
        } else if index_url.is_empty() || index_url.contains("://") {
            return Err(ConfigError::Invalid {
                var: env.var_name("INDEX_URL"),
                value: common::config::redact_url(&index_url),
                reason: "is a directory (the embedded index) or an http(s):// OpenSearch URL"
                    .into(),
            });
        } else {
            IndexBackend::Embedded(index_url.into())
        };
        let index_name: String = env.get("INDEX", "platform".to_owned())?;
        if index_name.is_empty()
            || index_name.len() > 100
            || !index_name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ConfigError::Invalid {
                var: env.var_name("INDEX"),
                value: index_name,
                reason: "is 1 to 100 of [a-z0-9_] (an OpenSearch alias name)".into(),
            });
        }
        let batch_size: usize = env.get("BATCH_SIZE", 500)?;
        if batch_size == 0 {
            return Err(ConfigError::Invalid {
                var: env.var_name("BATCH_SIZE"),
                value: "0".into(),
                reason: "a batch holds at least one event".into(),
            });
        }
        let timeouts = DatabaseTimeouts::default();
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
            index,
            index_name,
            shards: env.get("INDEX_SHARDS", 3)?,
            replicas: env.get("INDEX_REPLICAS", 2)?,
            opensearch_timeout: env.get("OPENSEARCH_TIMEOUT", Duration::from_secs(5))?,
            cursor_keep_alive: env.get("CURSOR_KEEP_ALIVE", Duration::from_secs(60))?,
            compact_every: env.get(
                "COMPACT_EVERY",
                crate::index::embedded::DEFAULT_COMPACT_EVERY,
            )?,
            events: EventBusConfig::from_env(env)?,
            consumer_group: env.get("CONSUMER_GROUP", "search".to_owned())?,
            batch_size,
            batch_wait: env.get("BATCH_WAIT", Duration::from_millis(20))?,
            database_url: env.get(
                "DATABASE_URL",
                SecretUrl::new("sqlite://data/search-jobs.db"),
            )?,
            database_max_connections: env.get("DATABASE_MAX_CONNECTIONS", 5)?,
            database_timeouts: DatabaseTimeouts {
                acquire: env.get("DATABASE_ACQUIRE_TIMEOUT", timeouts.acquire)?,
                statement: env.get("DATABASE_STATEMENT_TIMEOUT", timeouts.statement)?,
            },
            jobs: JobsSettings::from_env(env, DEFAULTS.name)?,
            redis_url: env
                .shared_optional::<SecretUrl>("REDIS_URL")?
                .filter(|url| !url.is_empty()),
            redis: common::redis::RedisOptions::from_env(env)?,
            admin_token: common::auth::admin_token(env)?,
            users_timeout: env.get("USERS_TIMEOUT", Duration::from_secs(5))?,
        })
    }
}
