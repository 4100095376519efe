//! The lock service's contract, on every backend: in process and Redis.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::lock::{Fence, LockBackend, LockError, Locks, MemoryLocks, RedisLocks};

async fn redis_backend(url: String) -> Arc<dyn LockBackend> {
    let (client, _) = common::redis::connect(&url, &common::redis::RedisOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{}", test_support::backends::missing("Redis", &url, &e)));
    Arc::new(RedisLocks::new(
        client,
        format!("{}:", test_support::backends::unique("locks-test")),
    ))
}

async fn backends() -> Vec<(&'static str, Arc<dyn LockBackend>)> {
    vec![
        ("memory", Arc::new(MemoryLocks::default())),
        (
            "redis",
            redis_backend(test_support::backends::redis_url()).await,
        ),
        (
            "redis-cluster",
            redis_backend(test_support::backends::redis_cluster_url()).await,
        ),
    ]
}

#[tokio::test]
async fn one_holder_at_a_time_and_each_acquisition_gets_a_higher_fencing_token() {
    for (name, backend) in backends().await {
        let locks = Locks::new(backend);
        let lease = Duration::from_secs(5);
        let first = locks.try_acquire("reindex", lease).await.unwrap().unwrap();
        assert!(
            locks.try_acquire("reindex", lease).await.unwrap().is_none(),
            "{name}"
        );
        let other = locks.try_acquire("other", lease).await.unwrap();
        assert!(other.is_some(), "{name}: locks are per name");
        let token = first.fencing_token();
        assert!(first.release().await.unwrap(), "{name}");
        let second = locks.try_acquire("reindex", lease).await.unwrap().unwrap();
        assert!(second.fencing_token() > token, "{name}");
        second.release().await.unwrap();
    }
}

#[tokio::test]
async fn contending_workers_never_hold_a_lock_together() {
    for (name, backend) in backends().await {
        let locks = Locks::new(backend);
        let inside = Arc::new(AtomicUsize::new(0));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let fence = Arc::new(Fence::default());
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (locks, inside, overlaps, fence) = (
                locks.clone(),
                inside.clone(),
                overlaps.clone(),
                fence.clone(),
            );
            workers.spawn(async move {
                for _ in 0..5 {
                    let guard = locks
                        .acquire("counter", Duration::from_secs(5), Duration::from_secs(10))
                        .await
                        .unwrap()
                        .expect("acquired within the wait");
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    assert!(fence.admit(guard.fencing_token()), "tokens only grow");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                }
            });
        }
        workers.join_all().await;
        assert_eq!(overlaps.load(Ordering::SeqCst), 0, "{name}");
    }
}

#[tokio::test]
async fn a_held_lock_is_extended_while_its_guard_lives_and_let_go_when_dropped() {
    for (name, backend) in backends().await {
        let locks = Locks::new(backend);
        let lease = Duration::from_millis(150);
        let guard = locks.try_acquire("long-job", lease).await.unwrap().unwrap();
        tokio::time::sleep(lease * 4).await;
        assert!(guard.is_held(), "{name}");
        assert!(
            locks
                .try_acquire("long-job", lease)
                .await
                .unwrap()
                .is_none(),
            "{name}: still held"
        );
        drop(guard);
        let next = locks
            .acquire("long-job", lease, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(next.is_some(), "{name}: a dropped guard lets go");
    }
}

/// A backend whose holder stops extending: what a holder paused past its
/// lease (a stopped process, a partition) looks like to the others.
struct Pausable {
    inner: Arc<dyn LockBackend>,
    paused: AtomicBool,
}

#[async_trait]
impl LockBackend for Pausable {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn try_lock(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
    ) -> Result<Option<u64>, LockError> {
        self.inner.try_lock(name, token, lease).await
    }

    async fn extend(&self, name: &str, token: &str, lease: Duration) -> Result<bool, LockError> {
        if self.paused.load(Ordering::SeqCst) {
            return Err(LockError::Unavailable("paused".into()));
        }
        self.inner.extend(name, token, lease).await
    }

    async fn unlock(&self, name: &str, token: &str) -> Result<bool, LockError> {
        self.inner.unlock(name, token).await
    }
}

#[tokio::test]
async fn a_holder_paused_past_its_lease_loses_the_lock_and_its_late_write_is_refused() {
    for (name, backend) in backends().await {
        let paused = Arc::new(Pausable {
            inner: backend.clone(),
            paused: AtomicBool::new(false),
        });
        let stale = Locks::new(paused.clone());
        let fresh = Locks::new(backend);
        let resource = Fence::default();
        let lease = Duration::from_millis(200);
        let old = stale.try_acquire("index", lease).await.unwrap().unwrap();
        assert!(resource.admit(old.fencing_token()), "{name}");
        paused.paused.store(true, Ordering::SeqCst);
        let new = fresh
            .acquire("index", lease, Duration::from_secs(3))
            .await
            .unwrap()
            .expect("the lease ran out, so another takes it");
        assert!(resource.admit(new.fencing_token()), "{name}");
        // The old holder wakes up and writes: refused.
        assert!(
            !resource.admit(old.fencing_token()),
            "{name}: the stale write is refused"
        );
        tokio::time::timeout(Duration::from_secs(2), old.lost())
            .await
            .unwrap_or_else(|_| panic!("{name}: the old guard learns it lost the lock"));
        assert!(
            !old.release().await.unwrap(),
            "{name}: nothing of the new holder's is undone"
        );
        assert!(new.is_held(), "{name}");
        new.release().await.unwrap();
    }
}

/// The value of `name{backend="memory"}` in the Prometheus page.
fn memory_metric(page: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{backend=\"memory\"}} ");
    page.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn acquisitions_waits_timeouts_extensions_and_losses_are_counted() {
    let handle = common::metrics::install().unwrap();
    let names = [
        "locks_acquired_total",
        "locks_wait_seconds_count",
        "locks_wait_timeouts_total",
        "locks_extended_total",
        "locks_lost_total",
    ];
    let before: Vec<f64> = names
        .iter()
        .map(|n| memory_metric(&handle.render(), n))
        .collect();
    let paused = Arc::new(Pausable {
        inner: Arc::new(MemoryLocks::default()),
        paused: AtomicBool::new(false),
    });
    let locks = Locks::new(paused.clone());
    let lease = Duration::from_millis(60);
    let held = locks
        .acquire("counted", lease, Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert!(
        locks
            .acquire("counted", lease, Duration::from_millis(30))
            .await
            .unwrap()
            .is_none()
    );
    // Two extensions at least, then a failing one past the lease: lost.
    tokio::time::sleep(lease).await;
    paused.paused.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(2), held.lost())
        .await
        .expect("lost once extensions fail past the lease");
    let page = handle.render();
    let grew: Vec<f64> = names
        .iter()
        .zip(&before)
        .map(|(n, b)| memory_metric(&page, n) - b)
        .collect();
    assert!(grew[0] >= 1.0, "acquired: {grew:?}");
    assert!(grew[1] >= 1.0, "waits: {grew:?}");
    assert!(grew[2] >= 1.0, "timeouts: {grew:?}");
    assert!(grew[3] >= 1.0, "extended: {grew:?}");
    assert!(grew[4] >= 1.0, "lost: {grew:?}");
}

#[tokio::test]
async fn bad_names_and_leases_are_refused() {
    let locks = Locks::in_process();
    for bad in ["", &"x".repeat(201)] {
        assert!(matches!(
            locks.try_acquire(bad, Duration::from_secs(1)).await,
            Err(LockError::Invalid(_))
        ));
    }
    assert!(matches!(
        locks.try_acquire("x", Duration::from_millis(1)).await,
        Err(LockError::Invalid(_))
    ));
}

mod counters {
    use std::sync::Arc;
    use std::time::Duration;

    use common::counters::{CounterBackend, CounterError, Counters, MemoryCounters, RedisCounters};

    async fn on(url: String) -> Counters {
        let (client, _) = common::redis::connect(&url, &common::redis::RedisOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{}", test_support::backends::missing("Redis", &url, &e)));
        let prefix = format!("{}:", test_support::backends::unique("counters-test"));
        let redis: Arc<dyn CounterBackend> = Arc::new(RedisCounters::new(client, prefix));
        Counters::new(redis)
    }

    async fn backends() -> Vec<(&'static str, Counters)> {
        vec![
            ("memory", Counters::new(Arc::new(MemoryCounters::default()))),
            ("redis", on(test_support::backends::redis_url()).await),
            (
                "redis-cluster",
                on(test_support::backends::redis_cluster_url()).await,
            ),
        ]
    }

    #[tokio::test]
    async fn concurrent_increments_all_count_and_a_counter_expires_after_its_ttl() {
        for (name, counters) in backends().await {
            let mut adds = tokio::task::JoinSet::new();
            for _ in 0..50 {
                let counters = counters.clone();
                adds.spawn(async move {
                    counters
                        .add("views", 2, Duration::from_millis(400))
                        .await
                        .unwrap()
                });
            }
            let mut seen = adds.join_all().await;
            seen.sort_unstable();
            assert_eq!(
                seen,
                (1..=50).map(|n| n * 2).collect::<Vec<_>>(),
                "{name}: atomic"
            );
            assert_eq!(counters.value("views").await.unwrap(), 100, "{name}");
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(counters.value("views").await.unwrap(), 0, "{name}: expired");
            assert_eq!(
                counters
                    .add("views", 1, Duration::from_secs(1))
                    .await
                    .unwrap(),
                1,
                "{name}: a new life"
            );
        }
    }

    #[tokio::test]
    async fn a_windowed_count_starts_again_in_the_next_window() {
        for (name, counters) in backends().await {
            let window = Duration::from_millis(300);
            // Start just after a window opens, so three adds share it.
            let width = 300u128;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            let wait = u64::try_from(width - now % width).unwrap() + 5;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            for expected in 1..=3 {
                let n = counters
                    .add_in_window("uploads:7", 1, window)
                    .await
                    .unwrap();
                assert_eq!(n, expected, "{name}");
            }
            assert_eq!(
                counters.in_window("uploads:7", window).await.unwrap(),
                3,
                "{name}"
            );
            tokio::time::sleep(window).await;
            assert_eq!(
                counters.in_window("uploads:7", window).await.unwrap(),
                0,
                "{name}"
            );
            assert_eq!(
                counters
                    .add_in_window("uploads:7", 1, window)
                    .await
                    .unwrap(),
                1,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn bad_counter_names_are_refused() {
        let counters = Counters::in_process();
        for bad in ["", &"x".repeat(201)] {
            assert!(matches!(
                counters.add(bad, 1, Duration::from_secs(1)).await,
                Err(CounterError::Invalid(_))
            ));
        }
    }
}
