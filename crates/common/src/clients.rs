//! Every outbound client of the platform is built here, and each
//! constructor requires its timeouts: a call to a peer that stopped
//! answering must fail, not wait for ever. `clippy.toml` forbids the raw
//! builders (reqwest, tonic's `Endpoint`, awc, sqlx pools, fred, rdkafka)
//! everywhere else; Redis clients come from [`crate::redis`], Kafka ones
//! from [`crate::events`], each with the same rule.

use std::time::Duration;

/// How long to wait for a connection, and for a whole call on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

/// An HTTP client whose connections and requests give up after `timeouts`.
#[cfg(feature = "consul")]
#[allow(clippy::disallowed_methods)] // the one place reqwest clients are made
pub fn http(timeouts: Timeouts) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .build()
}

/// An HTTP client for a URL a user gave (a webhook): it connects to
/// `host` only at `addresses` (vetted by the caller, so that a second DNS
/// lookup cannot send it elsewhere) and follows no redirect (which could).
#[cfg(feature = "consul")]
#[allow(clippy::disallowed_methods)] // the one place reqwest clients are made
pub fn http_pinned(
    timeouts: Timeouts,
    host: &str,
    addresses: &[std::net::SocketAddr],
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .redirect(reqwest::redirect::Policy::none())
        // A proxy from the environment would look the name up again.
        .no_proxy()
        .resolve_to_addrs(host, addresses)
        .user_agent("platform-webhooks")
        .build()
}

/// A gRPC endpoint at `uri` (`http://host:port`): connecting gives up
/// after `timeouts.connect`, each call after `timeouts.request` (a shorter
/// `grpc-timeout` on the call still wins).
#[allow(clippy::disallowed_methods)] // the one place endpoints are made
pub fn grpc_endpoint(
    uri: String,
    timeouts: Timeouts,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(uri)?
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .tcp_nodelay(true))
}
