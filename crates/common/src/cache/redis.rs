//! L2 in Redis, and the invalidation channel between replicas.
//!
//! Values live at `cache:<name>:<key>` with a TTL. Invalidations are
//! published on `cache:<name>:invalidate`; each replica's subscriber drops
//! the key from its own L1 and disk. Redis errors are misses and are
//! logged: a cache outage slows requests down but never fails them.

use std::sync::Weak;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;

use super::Inner;
pub use crate::redis::RedisConnectError;

/// Invalidation message meaning "every key".
pub(super) const EVERYTHING: &str = "*";

#[derive(Clone)]
pub struct RedisLevel {
    client: Client,
    subscriber: SubscriberClient,
}

fn value_key(name: &str, key: &str) -> String {
    format!("cache:{name}:{key}")
}

fn channel(name: &str) -> String {
    format!("cache:{name}:invalidate")
}

impl RedisLevel {
    /// Connects a command client and a subscriber; fails if Redis does not
    /// answer within a few seconds.
    pub async fn connect(url: &str) -> Result<Self, RedisConnectError> {
        let (client, subscriber) = crate::redis::connect(url, None).await?;
        Ok(Self { client, subscriber })
    }

    pub async fn ping(&self) -> Result<(), fred::error::Error> {
        self.client.ping::<()>(None).await
    }

    pub(super) async fn get(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        match self
            .client
            .get::<Option<Vec<u8>>, _>(value_key(name, key))
            .await
        {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(%error, "redis cache read failed");
                None
            }
        }
    }

    pub(super) async fn set(&self, name: &str, key: &str, value: &[u8], ttl: Duration) {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let result: Result<(), _> = self
            .client
            .set(
                value_key(name, key),
                value,
                Some(Expiration::EX(seconds)),
                None,
                false,
            )
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "redis cache write failed");
        }
    }

    pub(super) async fn delete_and_announce(&self, name: &str, key: &str) {
        if let Err(error) = self.client.del::<(), _>(value_key(name, key)).await {
            tracing::warn!(%error, "redis cache delete failed");
        }
        self.announce(name, key).await;
    }

    pub(super) async fn announce(&self, name: &str, key: &str) {
        if let Err(error) = self.client.publish::<(), _, _>(channel(name), key).await {
            tracing::warn!(%error, "cache invalidation broadcast failed");
        }
    }

    /// Applies invalidations from every replica (this one included) to the
    /// local levels, until the cache is dropped.
    pub(super) fn follow_invalidations(&self, name: String, cache: Weak<Inner>) {
        let subscriber = self.subscriber.clone();
        let mut messages = subscriber.message_rx();
        tokio::spawn(async move {
            // Resubscribes after a reconnect.
            let _resubscribe = subscriber.manage_subscriptions();
            if let Err(error) = subscriber.subscribe(channel(&name)).await {
                tracing::warn!(%error, cache = name, "cannot subscribe to cache invalidations");
            }
            loop {
                let message = match messages.recv().await {
                    Ok(message) => message,
                    // Invalidations were lost: only dropping everything
                    // local is safe.
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
                    cache.forget_all_locally().await;
                } else {
                    cache.forget_locally(&key).await;
                }
            }
        });
    }
}
