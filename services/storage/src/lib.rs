//! The storage service: resumable uploads and streaming downloads.
//! (Coming: only the host — health, metrics, discovery — the tus
//! protocol's header checks ([`tus`]) and the store of uploads in progress
//! ([`uploads`]) exist today; no route serves them yet.)
//!
//! Every service has this shape: [`config`] reads its settings,
//! [`startup::build`] connects its backends and puts its API on a host,
//! and [`Storage`] ties them together for the binary and the
//! all-in-one runner; the rest of the crate is one module per concern.

pub mod config;
pub mod startup;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod tus;
pub mod uploads;

pub use config::Config;
pub use startup::{StartError, build};

common::service! {
    /// The service, for its binary and the all-in-one runner.
    pub struct Storage;
}
