//! HTTP pass-through to services that speak HTTP themselves (configured
//! with `GATEWAY_PASSTHROUGH`): the request goes to an instance found
//! through discovery, behind the same circuit breaker, deadline, rate
//! limiting and request id as the REST API; the response body is streamed
//! back as it arrives, never buffered whole.
//!
//! Request bodies are read up to `GATEWAY_MAX_BODY_BYTES` before
//! forwarding (streamed uploads arrive with the storage service).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderName;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::TryStreamExt;

use crate::problem::ApiError;
use crate::upstream::{CallContext, Upstream};

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross a proxy.
const HOP_BY_HOP: &[&str] = &[
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

/// The shared HTTP client; each pass-through scope carries its upstream.
pub struct Passthrough {
    pub client: reqwest::Client,
}

fn forwardable(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str())
}

pub async fn forward(
    req: HttpRequest,
    body: web::Bytes,
    ctx: CallContext,
    pass: web::Data<Passthrough>,
    upstream: web::Data<Arc<Upstream>>,
) -> Result<HttpResponse, ApiError> {
    let permit = upstream
        .breaker()
        .try_acquire()
        .map_err(|rejected| ApiError::Unavailable {
            service: upstream.service(),
            retry_after: rejected.retry_after,
        })?;
    let Some(authority) = upstream.pick_http() else {
        upstream.breaker().record(permit, false);
        return Err(ApiError::Unavailable {
            service: upstream.service(),
            retry_after: Duration::from_secs(1),
        });
    };
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut outgoing = pass
        .client
        .request(
            reqwest::Method::from_bytes(req.method().as_str().as_bytes())
                .unwrap_or(reqwest::Method::GET),
            format!("http://{authority}{path_and_query}"),
        )
        .timeout(upstream.timeout())
        .header("x-request-id", &ctx.request_id)
        .body(body);
    for (name, value) in req.headers() {
        if forwardable(name) {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    if let Some(peer) = req.peer_addr() {
        outgoing = outgoing.header("x-forwarded-for", peer.ip().to_string());
    }
    let mut trace = http::HeaderMap::new();
    common::telemetry::propagation::inject_http(&mut trace);
    for (name, value) in &trace {
        outgoing = outgoing.header(name, value);
    }

    let started = tokio::time::Instant::now();
    let sent = outgoing.send().await;
    let result = match &sent {
        Ok(r) if !r.status().is_server_error() => "ok",
        _ => "failed",
    };
    metrics::histogram!(
        "gateway_upstream_request_duration_seconds",
        "upstream" => upstream.service(),
        "result" => result
    )
    .record(started.elapsed().as_secs_f64());
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            upstream.breaker().record(permit, false);
            metrics::counter!("gateway_upstream_failures_total", "upstream" => upstream.service())
                .increment(1);
            return Err(if error.is_timeout() {
                ApiError::Timeout {
                    service: upstream.service(),
                }
            } else {
                ApiError::Unavailable {
                    service: upstream.service(),
                    retry_after: Duration::from_secs(1),
                }
            });
        }
    };
    upstream
        .breaker()
        .record(permit, !response.status().is_server_error());
    let status =
        actix_web::http::StatusCode::from_u16(response.status().as_u16()).map_err(|_| {
            ApiError::BadGateway {
                service: upstream.service(),
            }
        })?;
    let mut builder = HttpResponse::build(status);
    for (name, value) in response.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            builder.append_header((name.as_str(), value.as_bytes()));
        }
    }
    let stream = response
        .bytes_stream()
        .map_err(|e| actix_web::error::ErrorBadGateway(e.to_string()));
    Ok(builder.streaming(stream))
}
