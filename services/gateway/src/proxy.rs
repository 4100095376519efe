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
use crate::upstream::{CallContext, RouteClass, Upstream};

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
    /// Must be called on the worker thread that will use it. Connections
    /// give up after `connect_timeout`; each request carries the upstream timeout
    /// ([`forward_to`]).
    #[allow(clippy::disallowed_methods)] // the one place awc clients are made
    pub fn for_this_worker(connect_timeout: Duration) -> Self {
        let connector = awc::Connector::new()
            .timeout(connect_timeout)
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

/// Headers that say who the client is and how it came in are the
/// gateway's to write ([`hop_headers`]); from a client they are forgeries.
const GATEWAY_OWNED: [&str; 2] = ["forwarded", "x-real-ip"];

fn forwardable(name: &HeaderName) -> bool {
    let name = name.as_str();
    !HOP_BY_HOP.contains(&name)
        && !GATEWAY_OWNED.contains(&name)
        && !name.starts_with("x-forwarded-")
}

/// Response headers pass unless hop-by-hop.
fn returnable(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str())
}

/// A permit from the upstream's breaker and an instance to send to; no
/// instance counts as a failure.
pub(crate) fn admit(upstream: &Upstream, class: RouteClass) -> Result<(Permit, String), ApiError> {
    let permit =
        upstream
            .breaker(class)
            .try_acquire()
            .map_err(|rejected| ApiError::Unavailable {
                service: upstream.service().clone(),
                retry_after: rejected.retry_after,
            })?;
    match upstream.pick_http() {
        Some(authority) => Ok((permit, authority)),
        None => {
            upstream.breaker(class).record(permit, false);
            Err(ApiError::Unavailable {
                service: upstream.service().clone(),
                retry_after: Duration::from_secs(1),
            })
        }
    }
}

/// What the gateway adds to every hop it makes: the request id, who the
/// client is and how it came in (`X-Forwarded-For`, `X-Real-IP`,
/// `X-Forwarded-Host`, `X-Forwarded-Proto`, under the trusted proxies of
/// [`crate::client_addr`]) and the trace context, each handed to `add` (no
/// collection on the pass-through's hot path).
pub(crate) fn hop_headers(
    req: &HttpRequest,
    ctx: &CallContext,
    mut add: impl FnMut(HeaderName, HeaderValue),
) {
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        add(HeaderName::from_static("x-request-id"), id);
    }
    let origin = crate::client_addr::origin(req);
    if let Some(client) = origin.client
        && let Ok(ip) = HeaderValue::from_str(&client.to_string())
    {
        add(HeaderName::from_static("x-forwarded-for"), ip.clone());
        add(HeaderName::from_static("x-real-ip"), ip);
    }
    if let Some(host) = req.headers().get(header::HOST) {
        add(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    add(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(origin.proto),
    );
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
    forward_unchanged(&req, body, &ctx, &pass, &upstream).await
}

/// Passes the request on to `upstream` with its path (normalised) and
/// query as they came: for upstreams that serve the gateway's own paths.
pub async fn forward_unchanged(
    req: &HttpRequest,
    body: web::Bytes,
    ctx: &CallContext,
    pass: &Passthrough,
    upstream: &Upstream,
) -> Result<HttpResponse, ApiError> {
    let path = normalise_path(req.uri().path())?;
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    forward_to(req, &path_and_query, body, ctx, pass, upstream).await
}

/// The path as the upstream will see it: repeated slashes collapsed, and
/// refused when a segment is `.` or `..` or hides a separator, encoded or
/// not (`%2e%2e`, `..%2f`): an upstream that decodes before routing would
/// otherwise be walked out of the prefix the gateway checked.
pub(crate) fn normalise_path(path: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::BadRequest {
        code: "invalid_path",
        detail: "the path may not contain dot segments or encoded separators".into(),
        field: None,
    };
    let mut normalised = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        if decoded == b"."
            || decoded == b".."
            || decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0))
        {
            tracing::warn!(
                path,
                "refused a path with dot segments or encoded separators"
            );
            return Err(invalid());
        }
        normalised.push('/');
        normalised.push_str(segment);
    }
    if normalised.is_empty() || path.ends_with('/') {
        normalised.push('/');
    }
    Ok(normalised)
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
    forward_as(req, path_and_query, body, ctx, pass, upstream, None).await
}

/// As [`forward_to`], with `authorization` in place of the client's
/// `Authorization` header when given (a redeemed ticket's token).
pub async fn forward_as(
    req: &HttpRequest,
    path_and_query: &str,
    body: web::Bytes,
    ctx: &CallContext,
    pass: &Passthrough,
    upstream: &Upstream,
    authorization: Option<HeaderValue>,
) -> Result<HttpResponse, ApiError> {
    let class = RouteClass::of_method(req.method().is_safe());
    // Held until the upstream's answer starts: the class's cap bounds the
    // calls waiting on that upstream, as for gRPC calls.
    let _slot = upstream.admit(class)?;
    let (permit, authority) = admit(upstream, class)?;
    let mut outgoing = pass
        .client
        .request(
            req.method().clone(),
            format!("http://{authority}{path_and_query}"),
        )
        .timeout(upstream.timeout());
    let headers = outgoing.headers_mut();
    let mut forged = false;
    for (name, value) in req.headers() {
        if forwardable(name) {
            headers.append(name.clone(), value.clone());
        } else {
            forged |= !HOP_BY_HOP.contains(&name.as_str());
        }
    }
    if forged {
        tracing::info!(
            client = ?crate::client_addr::client_ip(req),
            "dropped client-supplied forwarding headers; the gateway sets its own"
        );
    }
    hop_headers(req, ctx, |name, value| {
        headers.insert(name, value);
    });
    if let Some(authorization) = authorization {
        headers.insert(header::AUTHORIZATION, authorization);
    }

    let started = tokio::time::Instant::now();
    let sent = outgoing.send_body(body).await;
    let result = match &sent {
        Ok(r) if !r.status().is_server_error() => "ok",
        _ => "failed",
    };
    metrics::histogram!(
        "gateway_upstream_request_duration_seconds",
        "upstream" => upstream.service().clone(),
        "class" => class.as_str(),
        "result" => result
    )
    .record(started.elapsed().as_secs_f64());
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            upstream.breaker(class).record(permit, false);
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
        .breaker(class)
        .record(permit, !response.status().is_server_error());
    let mut builder = HttpResponse::build(response.status());
    for (name, value) in response.headers() {
        if returnable(name) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_dot_segments_refused() {
        assert_eq!(
            normalise_path("/api/v1/echo/a//b/").unwrap(),
            "/api/v1/echo/a/b/"
        );
        assert_eq!(normalise_path("/").unwrap(), "/");
        assert_eq!(normalise_path("/x/a.b/..c").unwrap(), "/x/a.b/..c");
        for bad in [
            "/api/v1/echo/../users",
            "/api/v1/echo/./x",
            "/api/v1/echo/%2e%2E/admin",
            "/api/v1/echo/.%2e",
            "/api/v1/echo/..%2fadmin",
            "/api/v1/echo/a%5c..",
            "/api/v1/echo/%00",
        ] {
            assert!(normalise_path(bad).is_err(), "{bad}");
        }
    }
}
