//! Process gauges, read from `/proc` and the Tokio runtime at scrape time.

use std::sync::OnceLock;

static RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();

/// Notes the main runtime so its task count can be read from any thread
/// (actix-web's workers run their own single-threaded runtimes).
pub(super) fn remember_runtime() {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let _ = RUNTIME.set(handle);
    }
}

pub(super) fn record() {
    if let Some(bytes) = resident_memory_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(bytes as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(fds.count() as f64);
    }
    if let Some(runtime) = RUNTIME.get() {
        let m = runtime.metrics();
        metrics::gauge!("tokio_alive_tasks").set(m.num_alive_tasks() as f64);
        metrics::gauge!("tokio_workers").set(m.num_workers() as f64);
    }
}

/// `VmRSS` from `/proc/self/status`; `None` off Linux.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn resident_memory_is_read_on_linux() {
        let bytes = super::resident_memory_bytes().expect("Linux exposes VmRSS");
        assert!(
            bytes > 1024 * 1024,
            "a test binary uses more than 1 MiB: {bytes}"
        );
    }
}
