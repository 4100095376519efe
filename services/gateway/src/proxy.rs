//! HTTP pass-through to services that speak HTTP themselves (configured
//! with `GATEWAY_PASSTHROUGH`): the request goes to an instance found
//! through discovery, behind the same circuit breaker, deadline, rate
//! limiting and request id as the REST API; the response body is streamed
//! back as it arrives, never buffered whole.
//!
//! The client is actix's own (`awc`), one per worker thread: a request is
//! written and its answer read by the handler's own future on a pooled
//! connection of the same thread, with no hand-off to a connection task
//! or another thread. Request bodies are read up to
//! `GATEWAY_MAX_BODY_BYTES` before forwarding (streamed uploads arrive
//! with the storage service).

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use resilience::breaker::Permit;

use crate::problem::ApiError;
use crate::upstream::{CallContext, Upstream};

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross a proxy; the length
/// and host are the client library's to set for the new hop.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Pooled HTTP/1.1 connections to upstream instances, one per worker.
pub struct Passthrough {
    client: awc::Client,
}

impl Passthrough {
    /// Must be called on the worker thread that will use it.
    pub fn for_this_worker() -> Self {
        let connector = awc::Connector::new()
            .timeout(Duration::from_secs(1))
            .limit(4096)
            .conn_keep_alive(Duration::from_secs(30));
        Self {
            client: awc::ClientBuilder::new()
                .connector(connector)
                .no_default_headers()
                .disable_redirects()
                .finish(),
        }
    }

    pub fn client(&self) -> &awc::Client {
        &self.client
    }
}

fn forwardable(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str())
}

/// A permit from the upstream's breaker and an instance to send to; no
/// instance counts as a failure.
pub(crate) fn admit(upstream: &Upstream) -> Result<(Permit, String), ApiError> {
    let permit = upstream
        .breaker()
        .try_acquire()
        .map_err(|rejected| ApiError::Unavailable {
            service: upstream.service().clone(),
            retry_after: rejected.retry_after,
        })?;
    match upstream.pick_http() {
        Some(authority) => Ok((permit, authority)),
        None => {
            upstream.breaker().record(permit, false);
            Err(ApiError::Unavailable {
                service: upstream.service().clone(),
                retry_after: Duration::from_secs(1),
            })
        }
    }
}

/// What the gateway adds to every hop it makes: the request id, the
/// client's address and the trace context, each handed to `add` (no
/// collection on the pass-through's hot path).
pub(crate) fn hop_headers(
    req: &HttpRequest,
    ctx: &CallContext,
    mut add: impl FnMut(HeaderName, HeaderValue),
) {
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        add(HeaderName::from_static("x-request-id"), id);
    }
    if let Some(peer) = req.peer_addr()
        && let Ok(ip) = HeaderValue::from_str(&peer.ip().to_string())
    {
        add(HeaderName::from_static("x-forwarded-for"), ip);
    }
    let mut trace = http::HeaderMap::new();
    common::telemetry::propagation::inject_http(&mut trace);
    for (name, value) in &trace {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            add(name, value);
        }
    }
}

/// Passes the request on unchanged (`GATEWAY_PASSTHROUGH` routes).
pub async fn forward(
    req: HttpRequest,
    body: web::Bytes,
    ctx: CallContext,
    pass: web::Data<Passthrough>,
    upstream: web::Data<Arc<Upstream>>,
) -> Result<HttpResponse, ApiError> {
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    forward_to(&req, path_and_query, body, &ctx, &pass, &upstream).await
}

/// Passes the request on to `path_and_query` of an instance of `upstream`.
pub async fn forward_to(
    req: &HttpRequest,
    path_and_query: &str,
    body: web::Bytes,
    ctx: &CallContext,
    pass: &Passthrough,
    upstream: &Upstream,
) -> Result<HttpResponse, ApiError> {
    let (permit, authority) = admit(upstream)?;
    let mut outgoing = pass
        .client
        .request(
            req.method().clone(),
            format!("http://{authority}{path_and_query}"),
        )
        .timeout(upstream.timeout());
    let headers = outgoing.headers_mut();
    for (name, value) in req.headers() {
        if forwardable(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    hop_headers(req, ctx, |name, value| {
        headers.insert(name, value);
    });

    let started = tokio::time::Instant::now();
    let sent = outgoing.send_body(body).await;
    let result = match &sent {
        Ok(r) if !r.status().is_server_error() => "ok",
        _ => "failed",
    };
    metrics::histogram!(
        "gateway_upstream_request_duration_seconds",
        "upstream" => upstream.service().clone(),
        "result" => result
    )
    .record(started.elapsed().as_secs_f64());
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            upstream.breaker().record(permit, false);
            metrics::counter!("gateway_upstream_failures_total", "upstream" => upstream.service().clone())
                .increment(1);
            tracing::debug!(%error, upstream = %upstream.service(), "pass-through call failed");
            return Err(match error {
                awc::error::SendRequestError::Timeout => ApiError::Timeout {
                    service: upstream.service().clone(),
                },
                _ => ApiError::Unavailable {
                    service: upstream.service().clone(),
                    retry_after: Duration::from_secs(1),
                },
            });
        }
    };
    upstream
        .breaker()
        .record(permit, !response.status().is_server_error());
    let mut builder = HttpResponse::build(response.status());
    for (name, value) in response.headers() {
        if forwardable(name) {
            builder.append_header((name.clone(), value.clone()));
        }
    }
    // A known length is kept: the answer goes out in one piece, not chunked.
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    Ok(match length {
        Some(length) => builder.body(SizedStream::new(length, response)),
        None => builder.body(BodyStream::new(response)),
    })
}
