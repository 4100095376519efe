//! `CHAT_*` settings; every one has a default (README, "Configuration").

use std::time::Duration;

use common::auth::{KeyRole, TokenSettings, WhenUnset};
use common::config::{ConfigError, Env, SecretUrl, ServiceConfig, ServiceDefaults};
use common::events::EventBusConfig;

use crate::broker::HistoryLimits;

/// Prefix of this service's environment variables.
pub const ENV_PREFIX: &str = "CHAT";

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "chat",
    http_port: 8082,
    grpc_port: Some(50052),
};

/// What one connection may do.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest WebSocket frame (and reassembled message) accepted.
    pub max_frame_bytes: usize,
    pub max_message_chars: usize,
    pub messages_per_second: u32,
    pub message_burst: u32,
    /// Frames queued for a client before it counts as too slow.
    pub queue: usize,
    pub max_connections_per_user: usize,
    pub max_rooms_per_connection: usize,
    pub heartbeat: Duration,
    /// Closed after this long without any frame from the client (pongs
    /// count).
    pub idle_timeout: Duration,
    /// Most missed messages a rejoining client is sent.
    pub recovery_limit: usize,
    /// Rooms with more users than this do not announce joins and leaves
    /// and send no member list on join: filling a room of n would
    /// otherwise cost n² frames.
    pub large_room: usize,
    /// `@name`s per message that become `UserMentioned` events; the rest
    /// are plain text.
    pub max_mentions: usize,
    /// Events waiting for the bus, per process, before new ones are shed.
    pub event_queue: usize,
    /// How long one frame may wait for the client to take it.
    pub send_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// How the gateway's access tokens are checked (`CHAT_JWT_*` /
    /// `PLATFORM_JWT_*`: the gateway's key, or its public key); required,
    /// and an HS256 key must be 32 bytes or more.
    pub tokens: TokenSettings,
    pub limits: Limits,
    pub history: HistoryLimits,
    /// Shares rooms with other replicas through this Redis; in process
    /// when unset.
    pub redis_url: Option<SecretUrl>,
    /// Prefix of chat's Redis keys and channels.
    pub redis_prefix: String,
    pub presence_ttl: Duration,
    pub redis: common::redis::RedisOptions,
    pub events: EventBusConfig,
}

impl Config {
    /// Reads `env`, which carries this service's prefix.
    pub fn from_source(env: &Env) -> Result<Self, ConfigError> {
        let limits = Limits {
            max_frame_bytes: env.get("MAX_FRAME_BYTES", 16 * 1024)?,
            max_message_chars: env.get("MAX_MESSAGE_CHARS", 4000)?,
            messages_per_second: env.get("MESSAGES_PER_SECOND", 10)?,
            message_burst: env.get("MESSAGE_BURST", 20)?,
            queue: env.get("QUEUE_SIZE", 256)?,
            max_connections_per_user: env.get("MAX_CONNECTIONS_PER_USER", 5)?,
            max_rooms_per_connection: env.get("MAX_ROOMS_PER_CONNECTION", 50)?,
            heartbeat: env.get("HEARTBEAT", Duration::from_secs(15))?,
            idle_timeout: env.get("IDLE_TIMEOUT", Duration::from_secs(45))?,
            recovery_limit: env.get("RECOVERY_LIMIT", 100)?,
            large_room: env.get("LARGE_ROOM", 50)?,
            max_mentions: env.get("MAX_MENTIONS", 10)?,
            event_queue: env.get("EVENT_QUEUE", 10_000)?,
            send_timeout: env.get("SEND_TIMEOUT", Duration::from_secs(10))?,
        };
        if limits.heartbeat >= limits.idle_timeout {
            return Err(ConfigError::Invalid {
                var: env.var_name("HEARTBEAT"),
                value: format!("{:?}", limits.heartbeat),
                reason: "must be shorter than IDLE_TIMEOUT, or live clients time out".into(),
            });
        }
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
            tokens: TokenSettings::from_env(env, KeyRole::Verifier, WhenUnset::Refuse)?,
            limits,
            history: HistoryLimits {
                size: env.get("HISTORY_SIZE", 100)?,
                ttl: env.get("HISTORY_TTL", Duration::from_secs(24 * 3600))?,
            },
            redis_url: env
                .shared_optional::<SecretUrl>("REDIS_URL")?
                .filter(|url| !url.is_empty()),
            redis_prefix: env.get("REDIS_PREFIX", "chat:".to_owned())?,
            presence_ttl: env.get("PRESENCE_TTL", Duration::from_secs(30))?,
            redis: common::redis::RedisOptions::from_env(env)?,
            events: EventBusConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_source(&Env::from_map(ENV_PREFIX, vars.iter().copied()))
    }

    #[test]
    fn chat_refuses_to_start_without_a_signing_key_or_with_a_short_one() {
        let err = config(&[]).unwrap_err();
        assert!(err.to_string().starts_with("CHAT_JWT_SECRET:"), "{err}");
        let err = config(&[("PLATFORM_JWT_SECRET", "sixteen byte key")]).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        assert!(!err.to_string().contains("sixteen"), "never echoed");
        assert!(config(&[("PLATFORM_JWT_SECRET", &"k".repeat(32))]).is_ok());
    }
}
