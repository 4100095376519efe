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
        url.query = tracing::field::Empty,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    // Parsing `traceparent` is wasted work when the span is filtered out.
    // Setting the parent fails only without an OpenTelemetry layer; the span
    // is then local.
    if !span.is_disabled() {
        let _ = span.set_parent(extract_actix(req.headers()));
        if !req.query_string().is_empty() {
            span.record("url.query", redact_query(req.query_string()));
        }
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

/// Query parameters whose values are credentials.
const SECRET_PARAMETERS: &[&str] = &[
    "ticket",
    "access_token",
    "refresh_token",
    "token",
    "password",
    "api_key",
];

/// `query` with the value of every credential parameter replaced by
/// `REDACTED` (OpenTelemetry's convention for `url.query`), so a ticket or
/// a token a client put in a URL never reaches a trace or a log line.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret(name) => format!("{name}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret(name: &str) -> bool {
    let decoded = name.replace("%5F", "_").replace("%5f", "_");
    SECRET_PARAMETERS
        .iter()
        .any(|secret| decoded.eq_ignore_ascii_case(secret))
}

#[cfg(test)]
mod tests {
    use super::redact_query;

    #[test]
    fn credentials_in_a_query_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_query("ticket=abc&room=lobby&ACCESS_TOKEN=xyz&access%5Ftoken=q"),
            "ticket=REDACTED&room=lobby&ACCESS_TOKEN=REDACTED&access%5Ftoken=REDACTED"
        );
        assert_eq!(redact_query("page=2&per_page=5"), "page=2&per_page=5");
        assert_eq!(redact_query("token"), "token");
    }
}
