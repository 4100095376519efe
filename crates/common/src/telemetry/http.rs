//! One span per incoming HTTP request, continuing the caller's trace.

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation::extract_actix;

/// Middleware for `App::wrap(from_fn(trace_http_request))`. Skips the
/// span when it could never be seen (see [`super::exporting`]).
pub async fn trace_http_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if !super::exporting() && !req.headers().contains_key("traceparent") {
        return next.call(req).await;
    }
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %req.path(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    // Parsing `traceparent` is wasted work when the span is filtered out.
    // Setting the parent fails only without an OpenTelemetry layer; the span
    // is then local.
    if !span.is_disabled() {
        let _ = span.set_parent(extract_actix(req.headers()));
    }
    let result = next.call(req).instrument(span.clone()).await;
    if let Ok(res) = &result {
        if let Some(route) = res.request().match_pattern() {
            span.record("http.route", route);
        }
        span.record("http.response.status_code", res.status().as_u16());
    }
    result
}
