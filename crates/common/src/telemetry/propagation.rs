//! W3C trace context (`traceparent`, `tracestate`) across process edges.
//!
//! Incoming HTTP requests (actix-web's header map) and gRPC requests
//! (`http` 1.x headers) are *extracted* into a parent context for the
//! request's span; outgoing HTTP and gRPC calls get the current span's
//! context *injected*. The propagator itself is the global one installed by
//! [`super::init`].

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct ActixHeaders<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for ActixHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HttpHeaders<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HttpHeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HttpHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct Metadata<'a>(&'a mut MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Parent context carried by an incoming actix-web request.
pub fn extract_actix(headers: &actix_web::http::header::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&ActixHeaders(headers)))
}

/// Parent context carried by an incoming `http` 1.x request (gRPC).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HttpHeaders(headers)))
}

/// Adds the current span's context to outgoing HTTP headers.
pub fn inject_http(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HttpHeadersMut(headers));
    });
}

/// Adds the current span's context to outgoing gRPC metadata.
pub fn inject_metadata(metadata: &mut MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut Metadata(metadata));
    });
}

/// The current span's context as a W3C `traceparent` value, for carrying
/// it through a store (an event's trace context) rather than a header.
pub fn current_traceparent() -> Option<String> {
    let mut headers = http::HeaderMap::new();
    inject_http(&mut headers);
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A tonic client interceptor that forwards the caller's trace context:
/// `UserServiceClient::with_interceptor(channel, TraceContextInterceptor)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_metadata(request.metadata_mut());
        Ok(request)
    }
}

/// The server span of one gRPC call, a child of the caller's context (none
/// when it could never be seen; see [`super::exporting`]); for
/// `tonic::transport::Server::builder().trace_fn(grpc_server_span)`.
pub fn grpc_server_span(request: &http::Request<()>) -> tracing::Span {
    if !super::exporting() && !request.headers().contains_key("traceparent") {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "grpc.request",
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = %request.uri().path(),
    );
    // An error here means no OpenTelemetry layer is installed; the span
    // then simply has no remote parent.
    let _ = span.set_parent(extract_http(request.headers()));
    span
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `f` with an OpenTelemetry-aware subscriber local to this thread,
    /// built the way production builds it when nothing exports spans (the
    /// sampler then records nothing, yet context must still flow).
    fn with_tracing<T>(f: impl FnOnce() -> T) -> T {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = crate::telemetry::tracer_provider(&crate::telemetry::TelemetryConfig {
            service_name: "test".into(),
            log_format: crate::telemetry::LogFormat::Json,
            log_filter: "info".into(),
            otlp_endpoint: None,
        })
        .unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn trace_id_of(traceparent: &str) -> &str {
        traceparent.split('-').nth(1).unwrap_or_default()
    }

    #[test]
    fn http_request_context_continues_into_outgoing_http_headers() {
        with_tracing(|| {
            let request = actix_web::test::TestRequest::default()
                .insert_header(("traceparent", PARENT))
                .to_http_request();
            let parent = extract_actix(request.headers());
            assert_eq!(
                parent.span().span_context().trace_id().to_string(),
                TRACE_ID
            );

            let span = tracing::info_span!("handler");
            span.set_parent(parent).unwrap();
            let _entered = span.enter();

            let mut outgoing = http::HeaderMap::new();
            inject_http(&mut outgoing);
            let sent = outgoing["traceparent"].to_str().unwrap();
            assert_eq!(trace_id_of(sent), TRACE_ID);
            // A new span id: the callee's parent is our span, not our caller.
            assert_ne!(sent, PARENT);
        });
    }

    #[test]
    fn grpc_server_span_continues_caller_trace_into_client_metadata() {
        with_tracing(|| {
            let request = http::Request::builder()
                .uri("/users.v1.UserService/GetUser")
                .header("traceparent", PARENT)
                .body(())
                .unwrap();
            let span = grpc_server_span(&request);
            let _entered = span.enter();

            let call = tonic::service::Interceptor::call(
                &mut TraceContextInterceptor,
                tonic::Request::new(()),
            )
            .unwrap();
            let sent = call
                .metadata()
                .get("traceparent")
                .unwrap()
                .to_str()
                .unwrap();
            assert_eq!(trace_id_of(sent), TRACE_ID);
        });
    }

    #[test]
    fn unexported_requests_without_context_get_no_span() {
        with_tracing(|| {
            let request = http::Request::builder()
                .uri("/users.v1.UserService/GetUser")
                .body(())
                .unwrap();
            assert!(!crate::telemetry::exporting());
            assert!(grpc_server_span(&request).is_none());
        });
    }

    #[test]
    fn missing_or_garbled_traceparent_starts_a_new_trace() {
        with_tracing(|| {
            let mut headers = http::HeaderMap::new();
            headers.insert("traceparent", http::HeaderValue::from_static("garbage"));
            let parent = extract_http(&headers);
            assert!(!parent.span().span_context().is_valid());

            let span = tracing::info_span!("root");
            let _entered = span.enter();
            let mut outgoing = http::HeaderMap::new();
            inject_http(&mut outgoing);
            let sent = outgoing["traceparent"].to_str().unwrap();
            assert_eq!(trace_id_of(sent).len(), 32);
            assert_ne!(trace_id_of(sent), TRACE_ID);
        });
    }
}
