//! Logs and traces.
//!
//! One `tracing` subscriber per process: human-readable lines for a terminal
//! (`LOG_FORMAT=pretty`, the default) or one JSON object per line for log
//! collectors (`LOG_FORMAT=json`). An OpenTelemetry layer is always
//! installed, so trace context is carried across HTTP, gRPC and Kafka even
//! when nothing exports spans; spans are exported over OTLP/gRPC only when
//! `OTLP_ENDPOINT` (or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`) is set.

pub mod http;
pub mod propagation;

use std::sync::atomic::{AtomicBool, Ordering};

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans leave the process (an OTLP endpoint is configured).
///
/// Request spans cost several microseconds each. When nothing exports them
/// and the caller sent no trace context, nobody can ever see them, so the
/// request middlewares skip them; a request that carries `traceparent`
/// always gets its span, so context still flows to downstream calls and
/// events.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::FromEnvValue;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl FromEnvValue for LogFormat {
    fn from_env_value(raw: &str) -> Result<Self, String> {
        match raw.to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            _ => Err("expected pretty or json".into()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// `service.name` of exported spans.
    pub service_name: String,
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `users=debug,tower=warn`.
    pub log_filter: String,
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("a tracing subscriber is already installed in this process")]
    AlreadyInstalled,
}

/// Keeps the tracer provider alive; [`TelemetryGuard::shutdown`] flushes
/// spans that are still buffered.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Exports what is buffered and stops the exporter. Blocking work runs
    /// off the async threads.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = flushed {
            // The subscriber may already be gone; stderr always is there.
            eprintln!("warning: flushing traces failed: {error}");
        }
    }
}

/// Builds the tracer provider: an OTLP batch exporter when configured,
/// otherwise a provider that still assigns ids so context propagates.
pub fn tracer_provider(config: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if config.otlp_endpoint.is_none() {
        // Nothing exports, so recording spans is pure cost. Unsampled spans
        // still get ids, so trace context keeps flowing to other services;
        // a caller's sampled context is still honoured.
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
    }
    if let Some(endpoint) = &config.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Installs the process-wide subscriber, tracer provider and W3C
/// `traceparent` propagator. Call once, from inside the Tokio runtime.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&config.log_filter).map_err(|e| TelemetryError::Filter {
        filter: config.log_filter.clone(),
        reason: e.to_string(),
    })?;
    let provider = tracer_provider(config)?;
    // Source locations, thread ids and busy/idle timings are attributes on
    // every span; a span per request makes them a measurable cost (see
    // BENCHMARKS.md) for little insight.
    let otel = tracing_opentelemetry::layer()
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_tracer(provider.tracer("platform"));
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());

    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match config.log_format {
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer()).try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInstalled)?;
    EXPORTING.store(config.otlp_endpoint.is_some(), Ordering::Relaxed);
    Ok(TelemetryGuard { provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_known_names_only() {
        assert_eq!(LogFormat::from_env_value("JSON"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_env_value("pretty"), Ok(LogFormat::Pretty));
        assert!(LogFormat::from_env_value("xml").is_err());
    }

    #[test]
    fn invalid_filter_is_reported_not_panicked() {
        let config = TelemetryConfig {
            service_name: "users".into(),
            log_format: LogFormat::Pretty,
            log_filter: "users=loud".into(),
            otlp_endpoint: None,
        };
        let err = init(&config).err().expect("filter must be rejected");
        assert!(err.to_string().contains("users=loud"), "{err}");
    }
}
