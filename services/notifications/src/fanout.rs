//! Live delivery across replicas: a stored notification is published on
//! one Redis channel (`NOTIFICATIONS_REDIS_CHANNEL`) that every replica
//! follows, and each hands it to its own streams of that user. The
//! replica that stored it hears it back like the others, so there is one
//! path and no duplicate. Without Redis (embedded) delivery stays in the
//! process.
//!
//! Redis carries the live copy only: the store has the truth. When a
//! publish fails the notification is still handed to this replica's
//! streams, and a stream elsewhere finds it in the store when the next
//! one arrives with a higher `seq` (see [`crate::sse`]) or when its client
//! reconnects with `Last-Event-ID`.

use std::sync::Arc;

use fred::clients::{Client, SubscriberClient};
use fred::prelude::*;

use crate::live::Live;
use crate::store::Notification;

pub enum Fanout {
    Local(Arc<Live>),
    Redis {
        live: Arc<Live>,
        client: Client,
        channel: String,
    },
}

impl Fanout {
    /// Follows `channel` on the Redis at `url`, handing what arrives to
    /// `live`. Connects in the background: a replica starts while Redis
    /// is down and delivers to its own streams until it returns (only a
    /// malformed URL, or a cluster none of whose seeds answers, fails).
    pub async fn redis(
        url: &str,
        options: &common::redis::RedisOptions,
        channel: String,
        live: Arc<Live>,
    ) -> Result<Self, common::redis::RedisConnectError> {
        common::redis::check_cluster_seeds(url, options).await?;
        let (client, subscriber) = common::redis::connect_in_background(url, options)?;
        follow(subscriber, channel.clone(), live.clone());
        Ok(Self::Redis {
            live,
            client,
            channel,
        })
    }

    /// Hands `notification` to every replica's streams of its user.
    pub async fn deliver(&self, notification: &Notification) {
        match self {
            Self::Local(live) => live.deliver(Arc::new(notification.clone())),
            Self::Redis {
                live,
                client,
                channel,
            } => {
                let published = match serde_json::to_string(notification) {
                    Ok(body) => client.publish::<(), _, _>(channel.as_str(), body).await,
                    Err(error) => {
                        tracing::warn!(%error, "cannot encode a notification");
                        return;
                    }
                };
                if let Err(error) = published {
                    metrics::counter!("notifications_fanout_failures_total").increment(1);
                    tracing::warn!(%error, "cannot publish a notification to the other replicas");
                    live.deliver(Arc::new(notification.clone()));
                }
            }
        }
    }
}

fn follow(subscriber: SubscriberClient, channel: String, live: Arc<Live>) {
    let mut messages = subscriber.message_rx();
    tokio::spawn(async move {
        let _resubscribe = common::redis::keep_subscribed(&subscriber);
        while let Err(error) = subscriber.subscribe(channel.as_str()).await {
            tracing::warn!(%error, channel, "cannot subscribe to live notifications yet");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        loop {
            match messages.recv().await {
                Ok(message) => {
                    let Some(text) = message.value.as_str() else {
                        continue;
                    };
                    match serde_json::from_str::<Notification>(&text) {
                        Ok(notification) => live.deliver(Arc::new(notification)),
                        Err(error) => {
                            tracing::warn!(%error, "skipped a malformed live notification")
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    // Those streams catch up from the store on the next one.
                    metrics::counter!("notifications_fanout_lagged_total").increment(missed);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
