//! Connects chat's backends and puts its routes on a host.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use common::events::EventBusError;
use common::server::ServiceHostBuilder;
use common::service::Shared;

use crate::broker::{Broker, MemoryBroker, RedisBroker, RedisBrokerConfig, RedisConnectError};
use crate::config::Config;
use crate::hub::Hub;
use crate::{Chat, routes};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
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

/// The service's routes on a host, not yet bound.
pub async fn build(config: Config, shared: &Shared) -> Result<ServiceHostBuilder, StartError> {
    let bus = shared
        .event_bus_or(&config.events)
        .map_err(StartError::Bus)?;
    let hub = Arc::new(Hub::default());
    let broker: Arc<dyn Broker> = match config.redis_url {
        Some(url) => {
            let redis = RedisBrokerConfig {
                url: url.expose().to_owned(),
                prefix: config.redis_prefix,
                history: config.history,
                presence_ttl: config.presence_ttl,
                redis: config.redis,
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
        events: crate::events::Publisher::start(bus, config.limits.event_queue),
        signer: config.tokens.signer(),
        limits: config.limits,
    });
    tokio::spawn(keep_alive(
        Arc::downgrade(&hub_for_drain),
        chat.limits.heartbeat,
        chat.limits.idle_timeout,
        closing.clone(),
    ));
    Ok(shared
        .host(config.service)
        .on_drain(closing)
        .http(move |cfg| {
            cfg.app_data(chat.clone());
            routes::configure(cfg);
        }))
}
