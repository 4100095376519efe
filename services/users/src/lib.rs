//! The users service: accounts, posts and comments; the platform's source
//! of truth.
//!
//! Every change is an event in the event store ([`store`]), applied to the
//! read models and queued in the outbox in the same transaction; a relay
//! publishes the outbox to the event bus. Single reads go through the
//! multi-level cache ([`views`]). The gRPC API is in [`grpc`].
//!
//! [`config`] reads the `USERS_*` settings and [`startup::build`] puts the
//! service on a host.

pub mod config;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod outbox;
pub mod password;
pub mod startup;
pub mod store;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod views;

pub use config::Config;
pub use startup::{StartError, build};

common::service! {
    /// The service, for its binary and the all-in-one runner.
    pub struct Users;
}
