//! `FailFast`: a small breaker in front of a backend the caller can do
//! without (Redis under a cache or a rate limiter).
//!
//! After `threshold` consecutive failures the backend is marked down: from
//! then on [`FailFast::allow`] says no at once, so no request waits on a
//! backend already known to be gone, and the caller takes its local
//! fallback. One background task probes the backend every `probe_every`;
//! the first probe that succeeds runs the `on_recovery` hook (a cache drops
//! what it may have missed) and only then lets calls through again. Going
//! down and coming back are logged once each and counted
//! (`backend_down_total`, `backend_recovered_total`, and each call that
//! skipped the backend in `backend_bypassed_total`, labels `backend`,
//! `user`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Checks the backend once; true when it answered.
pub type Probe = Arc<dyn Fn() -> BoxFuture<bool> + Send + Sync>;
/// Runs after a successful probe, before calls are let through again; false
/// keeps the backend marked down (the repair did not complete) and probing
/// goes on.
pub type Hook = Arc<dyn Fn() -> BoxFuture<bool> + Send + Sync>;

#[derive(Clone, Copy, Debug)]
pub struct FailFastConfig {
    /// Consecutive failures that mark the backend down.
    pub threshold: u32,
    pub probe_every: Duration,
}

impl Default for FailFastConfig {
    fn default() -> Self {
        Self {
            threshold: 3,
            probe_every: Duration::from_millis(250),
        }
    }
}

/// Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct FailFast {
    inner: Arc<Inner>,
}

struct Inner {
    backend: &'static str,
    user: &'static str,
    config: FailFastConfig,
    down: AtomicBool,
    consecutive: AtomicU32,
    /// Times the backend came back; a caller that must know whether an
    /// outage happened between two points compares these.
    recoveries: AtomicU64,
    probe: Probe,
    on_recovery: std::sync::Mutex<Option<Hook>>,
}

impl FailFast {
    pub fn new(
        backend: &'static str,
        user: &'static str,
        config: FailFastConfig,
        probe: Probe,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                user,
                config,
                down: AtomicBool::new(false),
                consecutive: AtomicU32::new(0),
                recoveries: AtomicU64::new(0),
                probe,
                on_recovery: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Runs `hook` each time the backend comes back, before any call is
    /// let through.
    pub fn on_recovery(&self, hook: Hook) {
        *self
            .inner
            .on_recovery
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Whether to try the backend now; false (and counted) while it is down.
    pub fn allow(&self) -> bool {
        if self.inner.down.load(Ordering::Acquire) {
            metrics::counter!(
                "backend_bypassed_total",
                "backend" => self.inner.backend,
                "user" => self.inner.user
            )
            .increment(1);
            return false;
        }
        true
    }

    pub fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::Acquire)
    }

    pub fn recoveries(&self) -> u64 {
        self.inner.recoveries.load(Ordering::Acquire)
    }

    pub fn succeeded(&self) {
        self.inner.consecutive.store(0, Ordering::Relaxed);
    }

    /// Counts a failed call; the one that reaches the threshold marks the
    /// backend down and starts the probe (on the caller's runtime).
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        let inner = &self.inner;
        let failures = inner.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::debug!(backend = inner.backend, user = inner.user, %error, failures, "backend call failed");
        if failures >= inner.config.threshold {
            self.trip(error);
        }
    }

    /// Marks the backend down at once, whatever the count: for a failure
    /// whose repair needs the recovery hook (a lost cache invalidation).
    pub fn trip(&self, error: &dyn std::fmt::Display) {
        let inner = &self.inner;
        if inner.down.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            backend = inner.backend,
            user = inner.user,
            %error,
            "backend unreachable; using the local fallback until a probe succeeds"
        );
        metrics::counter!("backend_down_total", "backend" => inner.backend, "user" => inner.user)
            .increment(1);
        let this = self.clone();
        tokio::spawn(async move { this.probe_until_up().await });
    }

    async fn probe_until_up(self) {
        let inner = &self.inner;
        loop {
            tokio::time::sleep(inner.config.probe_every).await;
            if Arc::strong_count(&self.inner) == 1 {
                return; // every user is gone
            }
            if !(inner.probe)().await {
                continue;
            }
            let hook = inner
                .on_recovery
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(hook) = hook
                && !hook().await
            {
                continue;
            }
            inner.consecutive.store(0, Ordering::Relaxed);
            inner.recoveries.fetch_add(1, Ordering::AcqRel);
            inner.down.store(false, Ordering::Release);
            tracing::info!(
                backend = inner.backend,
                user = inner.user,
                "backend reachable again"
            );
            metrics::counter!(
                "backend_recovered_total",
                "backend" => inner.backend,
                "user" => inner.user
            )
            .increment(1);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(up: Arc<AtomicBool>) -> Probe {
        Arc::new(move || {
            let up = up.clone();
            Box::pin(async move { up.load(Ordering::Acquire) })
        })
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_and_closes_after_a_probe_and_the_hook() {
        let up = Arc::new(AtomicBool::new(false));
        let guard = FailFast::new(
            "redis",
            "test",
            FailFastConfig {
                threshold: 2,
                probe_every: Duration::from_millis(10),
            },
            probe(up.clone()),
        );
        let hooked = Arc::new(AtomicBool::new(false));
        let seen = hooked.clone();
        guard.on_recovery(Arc::new(move || {
            let seen = seen.clone();
            Box::pin(async move {
                seen.store(true, Ordering::Release);
                true
            })
        }));
        guard.failed(&"one");
        assert!(guard.allow(), "one failure is not an outage");
        guard.succeeded();
        guard.failed(&"one");
        assert!(guard.allow(), "failures must be consecutive");
        guard.failed(&"two");
        assert!(!guard.allow(), "down: calls skip the backend");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(guard.is_down(), "probes fail while the backend is gone");
        up.store(true, Ordering::Release);
        for _ in 0..100 {
            if !guard.is_down() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(guard.allow());
        assert!(
            hooked.load(Ordering::Acquire),
            "the hook ran before calls resumed"
        );
        assert_eq!(guard.recoveries(), 1);
    }
}
