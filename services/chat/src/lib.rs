//! The chat service: WebSocket chat rooms with presence, history and
//! recovery.
//!
//! A client upgrades `GET /ws` with the gateway's access token and speaks
//! the JSON protocol in [`protocol`]. Each connection is a task
//! ([`session`]) with a bounded outbound queue in this replica's [`hub`];
//! messages get a per-room offset and a place in the room's history from
//! the [`broker`], which also carries them to every replica. Mentions
//! become `chat.events` on the event bus ([`events`]). [`config`] reads the
//! `CHAT_*` settings and [`startup::build`] puts the service on a host.

pub mod broker;
pub mod config;
pub mod events;
pub mod hub;
mod idempotency;
mod outbox;
pub mod protocol;
pub mod routes;
pub mod session;
pub mod startup;
#[cfg(feature = "test-util")]
pub mod test_util;

use std::sync::Arc;

use common::auth::TokenSigner;

pub use config::{Config, Limits};
pub use startup::{StartError, build};

use crate::broker::Broker;
use crate::hub::Hub;

/// What every connection and handler shares.
pub struct Chat {
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub events: events::Publisher,
    pub signer: Arc<TokenSigner>,
    pub limits: Limits,
}

common::service! {
    /// The service, for its binary and the all-in-one runner.
    pub struct ChatService;
}
