//! The notifications service: the seed's notifications, stored per user
//! and delivered live over server-sent events, made from the platform's
//! domain events.
//!
//! [`config`] reads its settings, [`startup::build`] connects its backends
//! and puts its API on a host, [`store`] keeps notifications, [`live`]
//! hands new ones to the open streams, [`sse`] and [`routes`] are the
//! API, and [`consumer`] turns Kafka events into notifications.

pub mod config;
pub mod consumer;
pub mod digest;
pub mod fanout;
pub mod live;
pub mod preferences;
pub mod routes;
pub mod sse;
pub mod startup;
pub mod store;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

pub use config::Config;
pub use startup::{StartError, build};

use store::{NewNotification, Notification, Store, StoreError};

common::service! {
    /// The service, for its binary and the all-in-one runner.
    pub struct Notifications;
}

/// What the handlers and the consumer share.
pub struct App {
    pub store: Store,
    /// This replica's open streams.
    pub live: Arc<live::Live>,
    /// How a stored notification reaches every replica's streams.
    pub fanout: fanout::Fanout,
    pub signer: Arc<common::auth::TokenSigner>,
    /// Runs webhook deliveries and the digest.
    pub jobs: common::jobs::JobQueue,
    pub webhooks: webhooks::WebhookSettings,
    /// Wakes the webhook relay: deliveries are in the outbox.
    pub webhook_wake: tokio::sync::Notify,
    /// Usernames to ids, for mentions.
    pub users: users::Users,
    pub streams: sse::StreamSettings,
    /// Cancelled when the host drains: open streams end.
    pub closing: tokio_util::sync::CancellationToken,
}

impl App {
    /// Stores `new` and hands it to its user's open streams (unless their
    /// preferences mute or digest it: `None`).
    pub async fn notify(&self, new: &NewNotification) -> Result<Option<Notification>, StoreError> {
        let stored = self.store.create(new).await?;
        if let Some(stored) = &stored {
            self.delivered(std::slice::from_ref(stored)).await;
        }
        Ok(stored)
    }

    /// Counts stored notifications and hands them to every replica's open
    /// streams.
    pub async fn delivered(&self, stored: &[Notification]) {
        for notification in stored {
            metrics::counter!("notifications_created_total", "type" => notification.kind.as_str())
                .increment(1);
            self.fanout.deliver(notification).await;
        }
        if !stored.is_empty() {
            self.webhook_wake.notify_one();
        }
    }
}
