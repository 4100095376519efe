//! Connecting to Redis: every Redis client in the platform is made here,
//! so timeouts and reconnection are chosen in one place.
//!
//! - [`connect`]: a command client and a subscriber, connected before the
//!   service starts (the cache's invalidations, chat's rooms);
//! - [`background_client`]: a command client that connects in the
//!   background, for callers that must start and answer while Redis is
//!   down (the gateway's rate limiter falls back to in-process limits).
//!
//! A single Redis that is down at start is taken up when it returns. A
//! Redis Cluster is different: [`check_cluster_seeds`] makes a seed list
//! of which no node answers stop the start, because that is a wrong list
//! far more often than every node of a cluster down at once, and without
//! one answer there is no slot map to route by. Every clustered client
//! counts the topology changes it follows (MOVED after a failover or a
//! resharding) in `redis_cluster_changes_total` (label `change`: `add`,
//! `remove`, `rebalance`); fred follows each MOVED and ASK itself and
//! offers no hook per redirection, so this is the count of what they
//! taught it.

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
pub enum RedisConnectError {
    #[error("cannot connect to Redis at {url}")]
    Connect {
        /// Without its password.
        url: String,
        #[source]
        source: fred::error::Error,
    },
    #[error("no seed node of the Redis Cluster at {url} answered ({seeds}): {reason}")]
    Seeds {
        url: String,
        seeds: String,
        reason: String,
    },
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
    let err = |source| RedisConnectError::Connect {
        url: crate::config::redact_url(url),
        source,
    };
    let (client, subscriber) = build(url, options)?;
    client.init().await.map_err(err)?;
    subscriber.init().await.map_err(err)?;
    Ok((client, subscriber))
}

/// For a Redis Cluster, fails unless one of its seed nodes answers within
/// the connect timeout, naming the seeds (a single Redis always passes:
/// it may be down at start). Call before starting a service's clients.
#[allow(clippy::disallowed_methods)] // the one place Redis clients are made
pub async fn check_cluster_seeds(
    url: &str,
    options: &RedisOptions,
) -> Result<(), RedisConnectError> {
    let config = parse(url)?;
    let fred::types::config::ServerConfig::Clustered { hosts, .. } = &config.server else {
        return Ok(());
    };
    let seeds = hosts
        .iter()
        .map(|h| format!("{}:{}", h.host, h.port))
        .collect::<Vec<_>>()
        .join(", ");
    let refused = |reason: String| RedisConnectError::Seeds {
        url: crate::config::redact_url(url),
        seeds: seeds.clone(),
        reason,
    };
    let client = builder(config.clone(), options)
        .build()
        .map_err(|e| refused(e.details().to_owned()))?;
    let answered = tokio::time::timeout(options.connect_timeout, client.init()).await;
    let _ = client.quit().await;
    match answered {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(refused(error.details().to_owned())),
        Err(_) => Err(refused(format!(
            "no answer within {:?}",
            options.connect_timeout
        ))),
    }
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
    let err = |source| RedisConnectError::Connect {
        url: crate::config::redact_url(url),
        source,
    };
    let builder = builder(parse(url)?, options);
    let client = builder.build().map_err(err)?;
    let subscriber = builder.build_subscriber_client().map_err(err)?;
    // The subscriber's topology changes are `keep_subscribed`'s business;
    // counting them too would count each change twice.
    count_cluster_changes(&client);
    watch_cluster_nodes(&client, options);
    watch_cluster_nodes(&subscriber, options);
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
            // cluster's topology read afresh). fred only notices silence
            // after the *last* write, so a node that keeps being sent
            // commands is never noticed; `watch_cluster_nodes` covers that.
            c.unresponsive = fred::types::config::UnresponsiveConfig {
                max_timeout: Some(unresponsive_after(options)),
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
    Config::from_url(url).map_err(|source| RedisConnectError::Connect {
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
    count_cluster_changes(&client);
    watch_cluster_nodes(&client, options);
    Ok(client)
}

/// How long a node may leave every request unanswered before its
/// connection is made again.
fn unresponsive_after(options: &RedisOptions) -> Duration {
    (options.command_timeout * 5).max(Duration::from_secs(1))
}

/// For a clustered client: asks every node it is connected to (the
/// primaries) for a `PING` twice per
/// [`unresponsive_after`], and when one does not answer in that time
/// reconnects, which reads the topology afresh, so that commands (and a
/// subscriber's channels) move to the replica that took over. fred's own
/// check misses a node that is sent commands all the time, since it
/// measures silence from the last write, and it never checks a
/// subscriber, which writes nothing. Runs as long as the runtime.
fn watch_cluster_nodes<C>(client: &C, options: &RedisOptions)
where
    C: ClientLike + Clone + Send + Sync + 'static,
{
    if !client.is_clustered() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let client = client.clone();
    let silence = unresponsive_after(options);
    runtime.spawn(async move {
        let mut last_reconnect: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(silence / 2).await;
            if !client.is_connected() {
                continue;
            }
            let pings = client.active_connections().into_iter().map(|node| {
                let client = client.clone();
                async move {
                    let options = fred::types::config::Options {
                        cluster_node: Some(node.clone()),
                        timeout: Some(silence),
                        ..Default::default()
                    };
                    let answered = client.with_options(&options).ping::<()>(None).await;
                    (node, answered)
                }
            });
            let silent = futures_util::future::join_all(pings)
                .await
                .into_iter()
                .find(|(_, answered)| {
                    answered
                        .as_ref()
                        .is_err_and(|e| *e.kind() == fred::error::ErrorKind::Timeout)
                });
            let Some((node, _)) = silent else {
                continue;
            };
            if last_reconnect.is_some_and(|at| at.elapsed() < silence) {
                continue;
            }
            last_reconnect = Some(tokio::time::Instant::now());
            tracing::warn!(
                node = format!("{}:{}", node.host, node.port),
                "a Redis Cluster node does not answer; reconnecting to read the topology afresh"
            );
            metrics::counter!("redis_cluster_unresponsive_total").increment(1);
            if let Err(error) = client.force_reconnection().await {
                tracing::debug!(%error, "reconnecting to the Redis Cluster failed; trying again");
            }
        }
    });
}

/// Keeps `subscriber`'s channels subscribed, for as long as it lives: after
/// every reconnection it subscribes to them again, retrying until that
/// works (fred's `manage_subscriptions` tries once, and a SUBSCRIBE sent
/// while a failover is still under way times out and is never retried).
/// On a cluster, a topology change reconnects the subscriber first: its
/// channels may be held by a node that no longer serves, and subscribing
/// again beside a live subscription would deliver every message twice.
pub fn keep_subscribed(subscriber: &SubscriberClient) -> tokio::task::JoinHandle<()> {
    use tokio::sync::broadcast::error::RecvError;
    let subscriber = subscriber.clone();
    tokio::spawn(async move {
        let mut reconnects = subscriber.reconnect_rx();
        let mut changes = subscriber.cluster_change_rx();
        let mut reconnected_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                reconnect = reconnects.recv() => match reconnect {
                    Ok(_) | Err(RecvError::Lagged(_)) => resubscribe(&subscriber).await,
                    Err(RecvError::Closed) => return,
                },
                change = changes.recv() => match change {
                    // One of ours: the reconnection read the new topology.
                    Ok(_) | Err(RecvError::Lagged(_))
                        if reconnected_at.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) => {}
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        reconnected_at = Some(tokio::time::Instant::now());
                        if let Err(error) = subscriber.force_reconnection().await {
                            tracing::debug!(%error, "cannot reconnect the subscriber yet");
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    })
}

async fn resubscribe(subscriber: &SubscriberClient) {
    let mut pause = Duration::from_millis(100);
    for _ in 0..60 {
        match subscriber.resubscribe_all().await {
            Ok(()) => return,
            Err(error) => {
                tracing::debug!(%error, "cannot subscribe again yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
    tracing::warn!("gave up subscribing again; the next reconnection tries anew");
}

/// Counts (and logs) each change of a clustered client's topology, until
/// the client is gone. Nothing for a single Redis. The first connection's
/// discovery of the nodes (every node "added") is not a change: counting
/// starts once the client is connected.
fn count_cluster_changes(client: &Client) {
    if !client.is_clustered() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let client = client.clone();
    runtime.spawn(async move {
        use fred::types::ClusterStateChange;
        // A failed first attempt is answered with an error; the next one
        // (see `keep_connecting`) is waited for in turn.
        while client.wait_for_connect().await.is_err() {}
        let mut changes = client.cluster_change_rx();
        drop(client);
        loop {
            match changes.recv().await {
                Ok(changes) => {
                    for change in changes {
                        let (label, node) = match &change {
                            ClusterStateChange::Add(node) => ("add", Some(node)),
                            ClusterStateChange::Remove(node) => ("remove", Some(node)),
                            ClusterStateChange::Rebalance => ("rebalance", None),
                        };
                        tracing::info!(
                            change = label,
                            node = node.map(|n| format!("{}:{}", n.host, n.port)),
                            "Redis Cluster topology changed"
                        );
                        metrics::counter!("redis_cluster_changes_total", "change" => label)
                            .increment(1);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
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
