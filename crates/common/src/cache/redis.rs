//! L2 in Redis, and the invalidation channel between replicas.
//!
//! Values live at `cache:<name>:g<generation>:<key>` with a TTL.
//! Invalidations are published on `cache:<name>:invalidate`; each
//! replica's subscriber drops the key from its own L1 and disk. Redis
//! errors are misses and never fail a request; behind a [`FailFast`] guard,
//! so while Redis is down no lookup waits on it.
//!
//! What keeps stale data out:
//! - an invalidation leaves a short tombstone in place of the value, and
//!   fills are `SET NX`: a load that read the database before the write
//!   cannot put its older value back after the invalidation;
//! - `invalidate_all` moves every replica to a new generation, so old L2
//!   entries are never read again (they expire by their TTL);
//! - invalidations this replica could not send while Redis was down are
//!   sent when it returns, as "everything" (a new generation), and every
//!   replica drops its local levels whenever its subscriber reconnects, for
//!   it may have missed messages meanwhile — both before L2 is read again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use resilience::fail_fast::FailFast;

use super::Inner;
pub use crate::redis::RedisConnectError;

/// Invalidation message meaning "every key" (a new generation).
pub(super) const EVERYTHING: &str = "*";

/// How long an invalidated key refuses fills: longer than any load takes.
const TOMBSTONE: Duration = Duration::from_secs(5);
const TOMBSTONE_VALUE: &[u8] = b"\0tombstone";

const REFRESH: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 0
";

#[derive(Clone)]
pub struct RedisLevel {
    client: Client,
    subscriber: SubscriberClient,
    guard: FailFast,
    /// The generation in use here; keys of older ones are never read.
    generation: Arc<AtomicU64>,
    /// An invalidation was dropped while Redis was down: the other
    /// replicas must be told "everything" when it returns.
    missed: Arc<AtomicBool>,
    refresh: fred::types::scripts::Script,
}

fn value_key(name: &str, generation: u64, key: &str) -> String {
    format!("cache:{name}:g{generation}:{key}")
}

fn generation_key(name: &str) -> String {
    format!("cache:{name}:generation")
}

fn channel(name: &str) -> String {
    format!("cache:{name}:invalidate")
}

impl RedisLevel {
    /// A command client and a subscriber that connect in the background:
    /// a service with a cache starts while Redis is down (only a malformed
    /// URL, or a cluster none of whose seeds answers, fails), and the level
    /// counts as down until a probe finds Redis.
    pub async fn connect(
        url: &str,
        options: &crate::redis::RedisOptions,
    ) -> Result<Self, RedisConnectError> {
        crate::redis::check_cluster_seeds(url, options).await?;
        let (client, subscriber) = crate::redis::connect_in_background(url, options)?;
        let guard = crate::redis::guard(&client, "cache");
        // A Redis that is up is used from the first request; one that does
        // not answer within a second leaves the level down until a probe
        // finds it (the start is not held up, no lookup waits for it).
        let connected = tokio::time::timeout(Duration::from_secs(1), async {
            client.wait_for_connect().await.is_ok() && subscriber.wait_for_connect().await.is_ok()
        })
        .await;
        if !matches!(connected, Ok(true)) {
            guard.trip(&"Redis did not answer at start");
        }
        Ok(Self {
            client,
            subscriber,
            guard,
            generation: Arc::new(AtomicU64::new(0)),
            missed: Arc::new(AtomicBool::new(false)),
            refresh: fred::types::scripts::Script::from_lua(REFRESH),
        })
    }

    pub async fn ping(&self) -> Result<(), fred::error::Error> {
        self.client.ping::<()>(None).await
    }

    /// Whether lookups currently skip Redis.
    pub fn is_bypassed(&self) -> bool {
        self.guard.is_down()
    }

    fn outcome<T>(&self, result: Result<T, fred::error::Error>, what: &str) -> Option<T> {
        match result {
            Ok(value) => {
                self.guard.succeeded();
                Some(value)
            }
            Err(error) => {
                tracing::debug!(%error, what, "redis cache call failed");
                self.guard.failed(&error);
                None
            }
        }
    }

    async fn load_generation(&self, name: &str) {
        if !self.guard.allow() {
            return;
        }
        let stored = self
            .client
            .get::<Option<u64>, _>(generation_key(name))
            .await;
        if let Some(generation) = self.outcome(stored, "generation") {
            self.generation
                .store(generation.unwrap_or(0), Ordering::Release);
        }
    }

    fn key(&self, name: &str, key: &str) -> String {
        value_key(name, self.generation.load(Ordering::Acquire), key)
    }

    /// One shared-level read as the cache makes it (this generation's key,
    /// through the fail-fast guard; a tombstone reads as nothing): for
    /// whoever reads the level alone, such as the benchmarks.
    pub async fn get(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        if !self.guard.allow() {
            return None;
        }
        let got = self
            .client
            .get::<Option<Vec<u8>>, _>(self.key(name, key))
            .await;
        self.outcome(got, "get")
            .flatten()
            .filter(|v| v != TOMBSTONE_VALUE)
    }

    /// Stores `value` unless the key holds a value or a tombstone already.
    pub async fn set(&self, name: &str, key: &str, value: &[u8], ttl: Duration) {
        if !self.guard.allow() {
            return;
        }
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let result: Result<(), _> = self
            .client
            .set(
                self.key(name, key),
                value,
                Some(Expiration::EX(seconds)),
                Some(SetOptions::NX),
                false,
            )
            .await;
        self.outcome(result, "set");
    }

    /// Replaces `key`'s value with a refreshed one — unless an
    /// invalidation's tombstone is there, which a reload that started
    /// before it must not overwrite.
    pub(super) async fn refresh(&self, name: &str, key: &str, value: &[u8], ttl: Duration) {
        if !self.guard.allow() {
            return;
        }
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let result: Result<(), _> = self
            .refresh
            .evalsha_with_reload(
                &self.client,
                vec![self.key(name, key)],
                vec![
                    fred::types::Value::Bytes(value.to_vec().into()),
                    fred::types::Value::Integer(seconds),
                    fred::types::Value::Bytes(TOMBSTONE_VALUE.to_vec().into()),
                ],
            )
            .await;
        self.outcome(result, "refresh");
    }

    pub(super) async fn delete_and_announce(&self, name: &str, key: &str) {
        if !self.guard.allow() {
            self.missed.store(true, Ordering::Release);
            return;
        }
        let millis = i64::try_from(TOMBSTONE.as_millis()).unwrap_or(i64::MAX);
        let result: Result<(), _> = self
            .client
            .set(
                self.key(name, key),
                TOMBSTONE_VALUE,
                Some(Expiration::PX(millis)),
                None,
                false,
            )
            .await;
        if let Err(error) = result {
            self.lost_invalidation(&error);
            return;
        }
        self.announce(name, key).await;
    }

    pub(super) async fn announce(&self, name: &str, key: &str) {
        if !self.guard.allow() {
            self.missed.store(true, Ordering::Release);
            return;
        }
        if let Err(error) = self.client.publish::<(), _, _>(channel(name), key).await {
            self.lost_invalidation(&error);
        }
    }

    /// Moves every replica to a new generation: no L2 entry written before
    /// is read again.
    pub(super) async fn new_generation(&self, name: &str) {
        if !self.guard.allow() {
            self.missed.store(true, Ordering::Release);
            return;
        }
        let bumped = self.client.incr::<u64, _>(generation_key(name)).await;
        match bumped {
            Ok(generation) => {
                self.generation.store(generation, Ordering::Release);
                self.announce(name, EVERYTHING).await;
            }
            Err(error) => self.lost_invalidation(&error),
        }
    }

    /// An invalidation did not reach Redis: Redis is treated as down until
    /// a probe finds it, and the recovery then tells every replica.
    fn lost_invalidation(&self, error: &fred::error::Error) {
        tracing::warn!(%error, "a cache invalidation did not reach Redis; it is sent as a full flush when Redis answers");
        self.missed.store(true, Ordering::Release);
        self.guard.trip(error);
    }

    /// Applies invalidations from every replica (this one included) to the
    /// local levels, until the cache is dropped; and makes this replica
    /// forget what it may have missed whenever Redis comes back.
    pub(super) fn follow_invalidations(&self, name: String, cache: Weak<Inner>) {
        self.on_outages(name.clone(), cache.clone());
        let level = self.clone();
        let subscriber = self.subscriber.clone();
        let mut messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
        tokio::spawn(async move {
            // Resubscribes after a reconnect.
            let _resubscribe = crate::redis::keep_subscribed(&subscriber);
            // Until the subscription holds, invalidations from the others
            // would be missed: keep trying (the level stays usable, and the
            // reconnect handling below clears what may be stale).
            let mut waited = false;
            while let Err(error) = subscriber.subscribe(channel(&name)).await {
                tracing::warn!(%error, cache = name, "cannot subscribe to cache invalidations yet");
                waited = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
                if cache.strong_count() == 0 {
                    return;
                }
            }
            // Invalidations sent while it could not subscribe were missed.
            if waited && let Some(cache) = cache.upgrade() {
                cache.forget_all_locally().await;
            }
            level.load_generation(&name).await;
            loop {
                let message = tokio::select! {
                    message = messages.recv() => message,
                    reconnected = reconnects.recv() => {
                        if matches!(reconnected, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            break;
                        }
                        // Messages sent while the subscriber was away are
                        // lost: only dropping everything local is safe.
                        tracing::info!(cache = name, "invalidation subscriber reconnected; clearing local levels");
                        let Some(cache) = cache.upgrade() else { break };
                        cache.forget_all_locally().await;
                        level.load_generation(&name).await;
                        continue;
                    }
                };
                let message = match message {
                    Ok(message) => message,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        tracing::warn!(cache = name, "invalidations lagged; clearing local levels");
                        match cache.upgrade() {
                            Some(cache) => cache.forget_all_locally().await,
                            None => break,
                        }
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let Some(cache) = cache.upgrade() else { break };
                let Some(key) = message.value.as_str() else {
                    continue;
                };
                if key == EVERYTHING {
                    level.load_generation(&name).await;
                    cache.forget_all_locally().await;
                } else {
                    cache.forget_locally(&key).await;
                }
            }
        });
    }

    /// When the guard finds Redis again: drop the local levels (writes on
    /// other replicas went unheard), pick up the current generation, and
    /// if this replica dropped invalidations, move everyone to a new one —
    /// all before any lookup reaches L2 again.
    fn on_outages(&self, name: String, cache: Weak<Inner>) {
        let level = self.clone();
        self.guard.on_recovery(Arc::new(move || {
            let (level, name, cache) = (level.clone(), name.clone(), cache.clone());
            Box::pin(async move {
                if let Some(cache) = cache.upgrade() {
                    cache.forget_all_locally().await;
                }
                let generation_key = generation_key(&name);
                // Until every replica has been told, Redis stays bypassed
                // and this runs again at the next probe.
                let generation = if level.missed.load(Ordering::Acquire) {
                    let Ok(bumped) = level.client.incr::<u64, _>(&generation_key).await else {
                        return false;
                    };
                    let told = level
                        .client
                        .publish::<(), _, _>(channel(&name), EVERYTHING)
                        .await;
                    if told.is_err() {
                        return false;
                    }
                    level.missed.store(false, Ordering::Release);
                    bumped
                } else {
                    match level.client.get::<Option<u64>, _>(&generation_key).await {
                        Ok(generation) => generation.unwrap_or(0),
                        Err(_) => return false,
                    }
                };
                level.generation.store(generation, Ordering::Release);
                true
            })
        }));
    }
}
