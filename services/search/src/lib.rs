//! The search service: full-text search over users and posts, fed by the
//! users service's events.
//!
//! Every service has this shape: [`config`] reads its settings,
//! [`startup::build`] connects its backends and puts its API on a host,
//! and [`Search`] ties them together for the binary and the
//! all-in-one runner; the rest of the crate is one module per concern:
//! [`document`] (what is indexed, from which events), [`query`] (a search,
//! checked), [`index`] (the `SearchIndex` trait: tantivy and OpenSearch),
//! [`consumer`] (the Kafka feed), [`reindex`] (rebuilding from the event
//! log), [`grpc`] (the API the gateway calls) and [`routes`] (the
//! operators' reindex route).

pub mod config;
pub mod consumer;
pub mod document;
pub mod grpc;
pub mod index;
pub mod query;
pub mod reindex;
pub mod routes;
pub mod startup;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod users;

pub use config::Config;
pub use startup::{StartError, build};

/// What the API, the consumer and the reindex job share.
pub struct App {
    pub index: index::Index,
    pub jobs: common::jobs::JobQueue,
    pub locks: common::lock::Locks,
    pub users: users::Users,
    pub metrics: grpc::QueryMetrics,
    pub cursor_key: query::CursorKey,
}

common::service! {
    /// The service, for its binary and the all-in-one runner.
    pub struct Search;
}
