//! The gateway: the platform's one public door.
//!
//! REST under `/api/v1` and `/api/v2` ([`routes`], [`versioning`]) for
//! users, sign-in, posts and comments, translated to the users service's
//! gRPC API through [`upstream::Upstream`] (discovery, round robin,
//! circuit breaker, deadline, retries for idempotent calls); chat's
//! WebSockets and REST relayed to a chat replica ([`chat`]); HTTP
//! pass-through to other services ([`proxy`]); per-client rate limits
//! ([`ratelimit`]) keyed by the client's address behind trusted proxies
//! ([`client_addr`]); JWT access tokens ([`jwt`]); RFC 9457 problem details
//! for every error ([`problem`]); the OpenAPI document ([`openapi`]).
//! [`config`] reads the `GATEWAY_*` settings and [`startup::build`] puts
//! the gateway on a host.

pub use common::auth as jwt;
pub mod auth;
pub mod chat;
pub mod client_addr;
pub mod config;
pub mod cors;
pub mod notification_settings;
pub mod notifications;
pub mod openapi;
pub mod problem;
pub mod proxy;
pub mod ratelimit;
pub mod request;
pub mod routes;
pub mod startup;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod upstream;
pub mod versioning;

pub use config::Config;
pub use startup::{StartError, build};

use crate::upstream::Upstream;

/// What the request handlers share.
pub struct Gateway {
    pub users: Upstream,
    pub search: Upstream,
    pub auth: auth::Authenticator,
    pub limits: AttemptLimits,
    pub ticket_ttl: std::time::Duration,
}

/// Quotas on attempts at one subject, whatever address they come from.
#[derive(Clone, Copy, Debug)]
pub struct AttemptLimits {
    pub login: resilience::rate_limit::Quota,
    pub signup: resilience::rate_limit::Quota,
}

common::service! {
    /// The service, for its binary and the all-in-one runner.
    pub struct GatewayService;
}
