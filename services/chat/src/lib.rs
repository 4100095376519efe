//! The chat service: WebSocket chat rooms with presence, history and
//! recovery.
//!
//! A client upgrades `GET /ws` with the gateway's access token and speaks
//! the JSON protocol in [`protocol`]. Each connection is a task
//! ([`session`]) with a bounded outbound queue in this replica's [`hub`];
//! messages get a per-room offset and a place in the room's history from
//! the [`broker`], which also carries them to every replica. Mentions
//! become `chat.events` on the event bus ([`events`]). Configuration is
//! read from `CHAT_*` variables (see the README).

pub mod broker;
pub mod events;
pub mod hub;
mod outbox;
pub mod protocol;
pub mod routes;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use common::auth::TokenSigner;
use common::config::{ConfigError, Env, Secret, ServiceConfig, ServiceDefaults};
use common::events::{EventBus, EventBusConfig, EventBusError};
use common::server::{ServiceHost, ServiceHostBuilder};

use crate::broker::{
    Broker, HistoryLimits, MemoryBroker, RedisBroker, RedisBrokerConfig, RedisConnectError,
};
use crate::hub::Hub;

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
}

#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// The key the gateway signs access tokens with.
    pub jwt_secret: Option<Secret>,
    pub limits: Limits,
    pub history: HistoryLimits,
    /// Shares rooms with other replicas through this Redis; in process
    /// when unset.
    pub redis_url: Option<String>,
    /// Prefix of chat's Redis keys and channels.
    pub redis_prefix: String,
    pub presence_ttl: Duration,
    pub events: EventBusConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Env::from_process(ENV_PREFIX))
    }

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
            jwt_secret: env
                .shared_optional::<Secret>("JWT_SECRET")?
                .filter(|s| !s.expose().is_empty()),
            limits,
            history: HistoryLimits {
                size: env.get("HISTORY_SIZE", 100)?,
                ttl: env.get("HISTORY_TTL", Duration::from_secs(24 * 3600))?,
            },
            redis_url: env
                .shared_optional::<String>("REDIS_URL")?
                .filter(|url| !url.is_empty()),
            redis_prefix: env.get("REDIS_PREFIX", "chat:".to_owned())?,
            presence_ttl: env.get("PRESENCE_TTL", Duration::from_secs(30))?,
            events: EventBusConfig::from_env(env)?,
        })
    }
}

/// What every connection and handler shares.
pub struct Chat {
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub bus: Arc<dyn EventBus>,
    pub signer: TokenSigner,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "CHAT_JWT_SECRET (or PLATFORM_JWT_SECRET) is required: chat verifies the gateway's access tokens with it"
    )]
    NoSigningKey,
    #[error("cannot connect to the event bus")]
    Bus(#[source] EventBusError),
    #[error(transparent)]
    Redis(#[from] RedisConnectError),
}

/// Every `heartbeat`, pings the live connections and ends the idle ones;
/// when the host starts draining, closes every session with 1001 so its
/// client reconnects to another replica instead of holding the drain.
async fn keep_alive(
    hub: std::sync::Weak<Hub>,
    heartbeat: Duration,
    idle_timeout: Duration,
    closing: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = closing.cancelled() => {
                if let Some(hub) = hub.upgrade() {
                    hub.shut_down();
                }
                return;
            }
            _ = tick.tick() => match hub.upgrade() {
                Some(hub) => hub.heartbeat(idle_timeout),
                None => return,
            },
        }
    }
}

/// The service's routes on a host.
pub async fn host(config: Config) -> Result<ServiceHostBuilder, StartError> {
    host_with_bus(config, None).await
}

/// Like [`host`], publishing to `bus` instead of the configured one (the
/// all-in-one runner shares one in-process bus).
pub async fn host_with_bus(
    config: Config,
    bus: Option<Arc<dyn EventBus>>,
) -> Result<ServiceHostBuilder, StartError> {
    let secret = config.jwt_secret.ok_or(StartError::NoSigningKey)?;
    let bus = match bus {
        Some(bus) => bus,
        None => config.events.connect().map_err(StartError::Bus)?,
    };
    let hub = Arc::new(Hub::default());
    let broker: Arc<dyn Broker> = match config.redis_url {
        Some(url) => {
            let redis = RedisBrokerConfig {
                url,
                prefix: config.redis_prefix,
                history: config.history,
                presence_ttl: config.presence_ttl,
            };
            RedisBroker::connect(redis, hub.clone()).await?
        }
        None => Arc::new(MemoryBroker::new(hub.clone(), config.history)),
    };
    let closing = tokio_util::sync::CancellationToken::new();
    let hub_for_drain = hub.clone();
    let chat = web::Data::new(Chat {
        hub,
        broker,
        bus,
        // The lifetime is the gateway's business; chat only verifies.
        signer: TokenSigner::new(secret.expose().as_bytes(), Duration::ZERO),
        limits: config.limits,
    });
    tokio::spawn(keep_alive(
        Arc::downgrade(&hub_for_drain),
        chat.limits.heartbeat,
        chat.limits.idle_timeout,
        closing.clone(),
    ));
    Ok(ServiceHost::builder(config.service)
        .on_drain(closing)
        .http(move |cfg| {
            cfg.app_data(chat.clone());
            routes::configure(cfg);
        }))
}
