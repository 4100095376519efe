//! Prometheus metrics: one recorder per process, rendered at `/metrics`.
//!
//! Code anywhere records with the `metrics` macros; this module installs the
//! Prometheus recorder that aggregates them, sets histogram buckets, and
//! refreshes process gauges (resident memory, open descriptors, Tokio tasks)
//! at each scrape, so they cost nothing between scrapes.

pub mod grpc;
pub mod http;
mod process;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds, from 1 ms to 10 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Body size buckets in bytes: 100 B to 1 GB by factors of ten.
const SIZE_BUCKETS: &[f64] = &[1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

/// Installs the process-wide recorder once; later calls (several services
/// in one process, many tests in one binary) share it.
pub fn install() -> Result<&'static PrometheusHandle, MetricsError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    process::remember_runtime();
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), SIZE_BUCKETS))
        .map_err(|e| MetricsError(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    // Two threads may race here; only the winner's recorder is installed
    // and only its handle is kept.
    let mut won = false;
    let kept = HANDLE.get_or_init(|| {
        won = true;
        handle
    });
    if won {
        metrics::set_global_recorder(recorder).map_err(|e| MetricsError(e.to_string()))?;
        spawn_upkeep(kept);
    }
    Ok(kept)
}

/// Histogram samples queue up until upkeep folds them into buckets; without
/// it a service nobody scrapes grows by every request it serves. A plain
/// thread, because the recorder may be installed before or outside a Tokio
/// runtime.
fn spawn_upkeep(handle: &'static PrometheusHandle) {
    const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start metrics upkeep; histogram memory is freed only at scrapes");
    }
}

/// The exposition text for a scrape.
pub fn render() -> String {
    let Some(handle) = HANDLE.get() else {
        return String::new();
    };
    process::record();
    handle.run_upkeep();
    handle.render()
}
