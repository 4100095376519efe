//! `NOTIFICATIONS_*` settings; every one has a default (README,
//! "Configuration").

use std::time::Duration;

use common::auth::{KeyRole, TokenSettings, WhenUnset};
use common::config::{ConfigError, Env, Secret, SecretUrl, ServiceConfig, ServiceDefaults};
use common::db::DatabaseTimeouts;
use common::events::EventBusConfig;
use common::jobs::JobsSettings;

use crate::sse::StreamSettings;
use crate::webhooks::WebhookSettings;

/// Prefix of this service's environment variables.
pub const ENV_PREFIX: &str = "NOTIFICATIONS";

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "notifications",
    http_port: 8083,
    grpc_port: Some(50053),
};

#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// Verifies the gateway's access tokens (`JWT_SECRET`, shared).
    pub tokens: TokenSettings,
    /// `postgres://…` in production; a SQLite file by default.
    pub database_url: SecretUrl,
    pub database_max_connections: u32,
    pub database_timeouts: DatabaseTimeouts,
    /// Kafka when `KAFKA_BROKERS` is set, otherwise the in-process bus.
    pub events: EventBusConfig,
    /// The consumer group reading the users' events.
    pub consumer_group: String,
    pub streams: StreamSettings,
    /// Redis shared by the replicas for live delivery; none: in process.
    pub redis_url: Option<SecretUrl>,
    pub redis: common::redis::RedisOptions,
    /// The channel every replica follows.
    pub redis_channel: String,
    /// The job queue (`JOBS_URL`: in process, or RabbitMQ) carrying
    /// webhook deliveries and the digest; its records in this database.
    pub jobs: JobsSettings,
    pub webhooks: WebhookSettings,
    /// Cron (UTC) of the daily digest.
    pub digest_schedule: String,
    /// Guards the jobs' operator routes on the admin listener.
    pub admin_token: Option<Secret>,
    /// Connecting to the users service, and each lookup there.
    pub users_timeout: Duration,
}

impl Config {
    /// Reads `env`, which carries this service's prefix.
    pub fn from_source(env: &Env) -> Result<Self, ConfigError> {
        let timeouts = DatabaseTimeouts::default();
        let streams = StreamSettings::default();
        let streams = StreamSettings {
            queue: env.get("STREAM_QUEUE", streams.queue)?,
            heartbeat: env.get("STREAM_HEARTBEAT", streams.heartbeat)?,
            retry: env.get("STREAM_RETRY", streams.retry)?,
        };
        if streams.queue == 0 || streams.heartbeat < Duration::from_millis(10) {
            return Err(ConfigError::Invalid {
                var: env.var_name("STREAM_QUEUE"),
                value: streams.queue.to_string(),
                reason: "a stream needs a queue of at least 1 and a heartbeat of at least 10ms"
                    .into(),
            });
        }
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
            tokens: TokenSettings::from_env(env, KeyRole::Verifier, WhenUnset::Refuse)?,
            database_url: env.get(
                "DATABASE_URL",
                SecretUrl::new("sqlite://data/notifications.db"),
            )?,
            database_max_connections: env.get("DATABASE_MAX_CONNECTIONS", 10)?,
            database_timeouts: DatabaseTimeouts {
                acquire: env.get("DATABASE_ACQUIRE_TIMEOUT", timeouts.acquire)?,
                statement: env.get("DATABASE_STATEMENT_TIMEOUT", timeouts.statement)?,
            },
            events: EventBusConfig::from_env(env)?,
            consumer_group: env.get("CONSUMER_GROUP", "notifications".to_owned())?,
            streams,
            redis_url: env
                .shared_optional::<SecretUrl>("REDIS_URL")?
                .filter(|url| !url.is_empty()),
            redis: common::redis::RedisOptions::from_env(env)?,
            redis_channel: env.get("REDIS_CHANNEL", "notifications:live".to_owned())?,
            jobs: JobsSettings::from_env(env, DEFAULTS.name)?,
            webhooks: WebhookSettings::from_env(env)?,
            digest_schedule: env.get("DIGEST_SCHEDULE", "0 8 * * *".to_owned())?,
            admin_token: common::auth::admin_token(env)?,
            users_timeout: env.get("USERS_TIMEOUT", Duration::from_secs(5))?,
        })
    }
}
