//! Connecting to Redis: every Redis client in the platform is made here,
//! so timeouts and reconnection are chosen in one place.
//!
//! - [`connect`]: a command client and a subscriber, connected before the
//!   service starts (the cache's invalidations, chat's rooms);
//! - [`background_client`]: a command client that connects in the
//!   background, for callers that must start and answer while Redis is
//!   down (the gateway's rate limiter falls back to in-process limits).

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;

/// How a Redis client waits. Every Redis client is built with a command
/// timeout (`REDIS_COMMAND_TIMEOUT`, shared): without one, fred waits for
/// ever, and a call made while it reconnects queues behind the reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    pub command_timeout: Duration,
    /// For establishing a connection (`REDIS_CONNECT_TIMEOUT`).
    pub connect_timeout: Duration,
    /// How many published messages may wait between the connection and
    /// their reader (fred's default when `None`).
    pub pubsub_buffer: Option<usize>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(3),
            pubsub_buffer: None,
        }
    }
}

impl RedisOptions {
    /// `REDIS_COMMAND_TIMEOUT` (with the service's prefix or `PLATFORM_`).
    pub fn from_env(env: &crate::config::Env) -> Result<Self, crate::config::ConfigError> {
        let command_timeout: Duration =
            env.shared("REDIS_COMMAND_TIMEOUT", Self::default().command_timeout)?;
        if command_timeout.is_zero() {
            return Err(crate::config::ConfigError::Invalid {
                var: env.var_name("REDIS_COMMAND_TIMEOUT"),
                value: "0".into(),
                reason: "a Redis call must not wait for ever".into(),
            });
        }
        Ok(Self {
            command_timeout,
            connect_timeout: env
                .shared("REDIS_CONNECT_TIMEOUT", Self::default().connect_timeout)?,
            pubsub_buffer: None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {url}")]
pub struct RedisConnectError {
    /// Without its password.
    url: String,
    #[source]
    source: fred::error::Error,
}

/// A command client and a subscriber on the Redis at `url`, both
/// connected (reconnecting with backoff if the connection drops later);
/// fails if Redis does not answer within a few seconds. Each command fails
/// after `options.command_timeout`.
#[allow(clippy::disallowed_methods)] // the one place Redis clients are made
pub async fn connect(
    url: &str,
    options: &RedisOptions,
) -> Result<(Client, SubscriberClient), RedisConnectError> {
    let err = |source| RedisConnectError {
        url: crate::config::redact_url(url),
        source,
    };
    let (client, subscriber) = build(url, options)?;
    client.init().await.map_err(err)?;
    subscriber.init().await.map_err(err)?;
    Ok((client, subscriber))
}

/// As [`connect`], but returns at once and connects (and reconnects) in
/// the background: for a service that must start and answer while Redis is
/// down, its commands failing at once until Redis answers. Only a
/// malformed URL is an error.
pub fn connect_in_background(
    url: &str,
    options: &RedisOptions,
) -> Result<(Client, SubscriberClient), RedisConnectError> {
    let (client, subscriber) = build(url, options)?;
    keep_connecting(client.clone(), options.connect_timeout);
    keep_connecting(subscriber.clone(), options.connect_timeout);
    Ok((client, subscriber))
}

/// Runs `client`'s connection until it quits, starting it again while its
/// first connection fails. Clients are built fail-fast: until connected,
/// a command fails at once (and the caller falls back) instead of queueing
/// for the command timeout; once connected, fred's reconnect policy takes
/// over dropped connections.
fn keep_connecting<C: ClientLike + Clone + Send + 'static>(client: C, pause: Duration) {
    tokio::spawn(async move {
        loop {
            match client.connect().await {
                // `quit`: the client is done.
                Ok(Ok(())) => return,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "Redis not reachable yet; trying again");
                    tokio::time::sleep(pause.min(Duration::from_secs(1))).await;
                }
                // The connection task panicked or was cancelled.
                Err(_) => return,
            }
        }
    });
}

fn build(
    url: &str,
    options: &RedisOptions,
) -> Result<(Client, SubscriberClient), RedisConnectError> {
    let err = |source| RedisConnectError {
        url: crate::config::redact_url(url),
        source,
    };
    let builder = builder(parse(url)?, options);
    let client = builder.build().map_err(err)?;
    let subscriber = builder.build_subscriber_client().map_err(err)?;
    Ok((client, subscriber))
}

#[allow(clippy::disallowed_methods)] // the one place Redis clients are made
fn builder(mut config: Config, options: &RedisOptions) -> Builder {
    // true: commands fail at once while no connection is up, and a failed
    // first connection ends the connection task (which the background
    // callers start again) instead of retrying behind queued commands.
    config.fail_fast = true;
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = options.connect_timeout;
            c.internal_command_timeout = options.connect_timeout;
            // A node that stops answering (paused, partitioned) keeps its
            // TCP connection open: without this the client would wait on it
            // for ever, and a cluster would never learn that its replica
            // took over. Such a connection is closed and made again (and a
            // cluster's topology read afresh).
            c.unresponsive = fred::types::config::UnresponsiveConfig {
                max_timeout: Some((options.command_timeout * 5).max(Duration::from_secs(1))),
                interval: Duration::from_millis(250),
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = options.command_timeout;
            if let Some(buffer) = options.pubsub_buffer {
                p.broadcast_channel_capacity = buffer;
            }
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    builder
}

/// `url` as a client configuration; fails on a malformed URL, so a typo
/// stops the start instead of turning into endless reconnects.
pub fn parse(url: &str) -> Result<Config, RedisConnectError> {
    Config::from_url(url).map_err(|source| RedisConnectError {
        url: crate::config::redact_url(url),
        source,
    })
}

/// A command client for `config` that connects, and reconnects, in the
/// background on the calling thread's runtime, with `options`' timeouts; a
/// command fails at once while no connection is up. A first connection
/// that fails is tried again, so a service started during an outage takes
/// Redis up when it returns.
#[allow(clippy::disallowed_methods)] // the one place Redis clients are made
pub fn background_client(
    config: Config,
    options: &RedisOptions,
) -> Result<Client, fred::error::Error> {
    let client = builder(config, options).build()?;
    keep_connecting(client.clone(), options.connect_timeout);
    Ok(client)
}

/// The fail-fast guard for `user`'s calls to `client`'s Redis: it probes
/// with `PING`, and is tripped the moment the client reports a connection
/// error (a reset, a refused reconnect), so the first requests after an
/// outage skip Redis at once instead of each waiting out the command
/// timeout. Must be called on a runtime.
pub fn guard(client: &Client, user: &'static str) -> resilience::fail_fast::FailFast {
    use resilience::fail_fast::{FailFast, FailFastConfig};
    let probe = client.clone();
    let guard = FailFast::new(
        "redis",
        user,
        FailFastConfig::default(),
        std::sync::Arc::new(move || {
            let client = probe.clone();
            Box::pin(async move { client.ping::<()>(None).await.is_ok() })
        }),
    );
    trip_on_connection_errors(client, guard.clone());
    guard
}

/// Trips `guard` on every connection error `client` reports, until the
/// client is gone.
fn trip_on_connection_errors(client: &Client, guard: resilience::fail_fast::FailFast) {
    let mut errors = client.error_rx();
    tokio::spawn(async move {
        loop {
            match errors.recv().await {
                Ok((error, _server)) => guard.trip(&error),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
