//! Contract tests for the multi-level cache, with and without the Redis
//! level (Redis is the machine's server: `TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; a missing server fails the test).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::cache::{CacheConfig, MultilevelCache, RedisLevel};

use test_support::backends::{missing, redis_cluster_url, redis_url};
use test_support::{TempDir, eventually};

/// A name no other test (or earlier run) uses, for keys and channels.
fn unique_name() -> &'static str {
    Box::leak(format!("t{}", uuid::Uuid::new_v4().simple()).into_boxed_str())
}

/// Small, so a test can go over it cheaply.
const MAX_VALUE_BYTES: usize = 64 * 1024;

fn config(name: &'static str, dir: &TempDir) -> CacheConfig {
    CacheConfig {
        name,
        namespace: name.to_owned(),
        l1_capacity: 1000,
        l1_ttl: Duration::from_secs(60),
        l2_ttl: Duration::from_secs(60),
        l3_ttl: Duration::from_secs(60),
        disk_dir: Some(dir.path().to_owned()),
        max_value_bytes: MAX_VALUE_BYTES,
    }
}

async fn redis() -> RedisLevel {
    redis_at(redis_url()).await
}

async fn redis_at(url: String) -> RedisLevel {
    RedisLevel::connect(&url, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("{}", missing("Redis", &url, &e)))
}

type Backends = Vec<(&'static str, MultilevelCache)>;

/// Both configurations of the contract, (label, cache), and the disk
/// levels' directories, removed when the test drops them.
async fn caches(name: &'static str) -> ([TempDir; 3], Backends) {
    let dirs = [
        TempDir::new("cache-test"),
        TempDir::new("cache-test"),
        TempDir::new("cache-test"),
    ];
    let backends = vec![
        (
            "l1+disk",
            MultilevelCache::new(config(name, &dirs[0]), None).await,
        ),
        (
            "l1+redis+disk",
            MultilevelCache::new(config(unique_name(), &dirs[1]), Some(redis().await)).await,
        ),
        (
            "l1+redis-cluster+disk",
            MultilevelCache::new(
                config(unique_name(), &dirs[2]),
                Some(redis_at(redis_cluster_url()).await),
            )
            .await,
        ),
    ];
    (dirs, backends)
}

#[derive(Debug, thiserror::Error)]
#[error("backend down")]
struct Down;

fn counting_loader(
    calls: &Arc<AtomicUsize>,
    value: &'static str,
) -> impl Fn() -> std::future::Ready<Result<String, Down>> {
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(value.to_owned()))
    }
}

#[tokio::test]
async fn a_value_is_loaded_once_then_served_from_cache() {
    let (_dirs, caches) = caches(unique_name()).await;
    for (label, cache) in caches {
        let calls = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let v: String = cache
                .get_or_load("user:1", counting_loader(&calls, "ann"))
                .await
                .unwrap();
            assert_eq!(v, "ann", "{label}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{label}");
    }
}

#[tokio::test]
async fn values_and_keys_over_the_limits_are_served_but_kept_at_no_level() {
    let (_dirs, caches) = caches(unique_name()).await;
    let large: &'static str = Box::leak("x".repeat(MAX_VALUE_BYTES + 1).into_boxed_str());
    let long_key = "k".repeat(common::cache::MAX_KEY_BYTES + 1);
    for (label, cache) in caches {
        for (key, value) in [("big:1", large), (long_key.as_str(), "small")] {
            let calls = Arc::new(AtomicUsize::new(0));
            for _ in 0..3 {
                let v: String = cache
                    .get_or_load(key, counting_loader(&calls, value))
                    .await
                    .unwrap();
                assert_eq!(v.len(), value.len(), "{label}");
            }
            assert_eq!(
                calls.load(Ordering::SeqCst),
                3,
                "{label}: key of {} bytes, value of {} bytes loaded every time",
                key.len(),
                value.len()
            );
        }
        // A value just under the limit is cached as usual.
        let fits: &'static str = Box::leak("y".repeat(MAX_VALUE_BYTES - 2).into_boxed_str());
        let calls = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let _: String = cache
                .get_or_load("fits:1", counting_loader(&calls, fits))
                .await
                .unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{label}");
    }
}

#[tokio::test]
async fn a_hundred_concurrent_misses_load_once() {
    let (_dirs, caches) = caches(unique_name()).await;
    for (label, cache) in caches {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let cache = cache.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load("post:9", || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, Down>("slow".to_owned())
                        }
                    })
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), "slow");
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "{label}: one load for 100 callers"
        );
    }
}

#[tokio::test]
async fn errors_are_not_cached_and_invalidation_forces_a_reload() {
    let (_dirs, caches) = caches(unique_name()).await;
    for (label, cache) in caches {
        let failed: Result<String, _> = cache.get_or_load("k", || async { Err(Down) }).await;
        assert!(failed.is_err(), "{label}");
        let calls = Arc::new(AtomicUsize::new(0));
        let v: String = cache
            .get_or_load("k", counting_loader(&calls, "v1"))
            .await
            .unwrap();
        assert_eq!(v, "v1", "{label}: the failure was not remembered");

        cache.invalidate("k").await;
        let v: String = cache
            .get_or_load("k", counting_loader(&calls, "v2"))
            .await
            .unwrap();
        assert_eq!(v, "v2", "{label}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn the_disk_level_survives_a_restart() {
    common::metrics::install().unwrap();
    let dir = TempDir::new("cache-test");
    let name = unique_name();
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let cache = MultilevelCache::new(config(name, &dir), None).await;
        let _: String = cache
            .get_or_load("user:3", counting_loader(&calls, "kept"))
            .await
            .unwrap();
    }
    let restarted = MultilevelCache::new(config(name, &dir), None).await;
    let v: String = restarted
        .get_or_load("user:3", counting_loader(&calls, "reloaded"))
        .await
        .unwrap();
    assert_eq!(v, "kept");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let text = common::metrics::render();
    assert!(
        text.lines().any(|l| l.starts_with("cache_hits_total")
            && l.contains(&format!("cache=\"{name}\""))
            && l.contains("level=\"l3\"")),
        "L3 hits are counted"
    );
}

#[tokio::test]
async fn an_update_on_one_replica_is_not_served_stale_by_another() {
    common::metrics::install().unwrap();
    replicas_agree(redis_url()).await;
}

#[tokio::test]
async fn on_a_redis_cluster_an_update_on_one_replica_is_not_served_stale_by_another() {
    common::metrics::install().unwrap();
    replicas_agree(redis_cluster_url()).await;
}

async fn replicas_agree(url: String) {
    let redis = || redis_at(url.clone());
    let name = unique_name();
    let (dir_a, dir_b) = (TempDir::new("cache-test"), TempDir::new("cache-test"));
    let a = MultilevelCache::new(config(name, &dir_a), Some(redis().await)).await;
    let b = MultilevelCache::new(config(name, &dir_b), Some(redis().await)).await;
    // Subscriptions are set up in the background.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let calls = Arc::new(AtomicUsize::new(0));
    let v: String = a
        .get_or_load("user:5", counting_loader(&calls, "old"))
        .await
        .unwrap();
    assert_eq!(v, "old");
    let v: String = b
        .get_or_load("user:5", counting_loader(&calls, "unused"))
        .await
        .unwrap();
    assert_eq!(v, "old", "replica B is served from the shared L2");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Replica A writes and invalidates; B must reload within moments.
    a.invalidate("user:5").await;
    eventually(
        Duration::from_secs(5),
        "replica B's L1 entry to be dropped by A's invalidation",
        || async {
            let seen: String = b
                .get_or_load("user:5", counting_loader(&calls, "new"))
                .await
                .unwrap();
            seen == "new"
        },
    )
    .await;
}

/// A load that began before an invalidation (it read the old row) must not
/// put its value back afterwards, in this replica or in Redis.
#[tokio::test]
async fn a_load_overtaken_by_an_invalidation_fills_nothing() {
    let (_dirs, caches) = caches(unique_name()).await;
    for (label, cache) in caches {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let started = std::sync::Mutex::new(Some(started_tx));
        let release = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
        let slow = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load("user:9", || {
                        if let Some(tx) = started.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        let release = release.clone();
                        async move {
                            if let Some(rx) = release.lock().await.take() {
                                let _ = rx.await;
                            }
                            Ok::<_, Down>("old".to_owned())
                        }
                    })
                    .await
                    .unwrap()
            })
        };
        started_rx.await.unwrap();
        // The write lands and invalidates while the old value is in flight.
        cache.invalidate("user:9").await;
        release_tx.send(()).unwrap();
        assert_eq!(slow.await.unwrap(), "old", "{label}: served once");
        let calls = Arc::new(AtomicUsize::new(0));
        let v: String = cache
            .get_or_load("user:9", counting_loader(&calls, "new"))
            .await
            .unwrap();
        assert_eq!(v, "new", "{label}: the overtaken value was not kept");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{label}");
    }
}

/// Across replicas: `invalidate_all` moves everyone to a new generation, so
/// an entry another replica has in Redis is not read again.
#[tokio::test]
async fn invalidate_all_retires_every_shared_entry() {
    generations_agree(redis_url()).await;
}

#[tokio::test]
async fn on_a_redis_cluster_invalidate_all_retires_every_shared_entry() {
    generations_agree(redis_cluster_url()).await;
}

async fn generations_agree(url: String) {
    let redis = || redis_at(url.clone());
    let name = unique_name();
    let (dir_a, dir_b) = (TempDir::new("cache-test"), TempDir::new("cache-test"));
    let a = MultilevelCache::new(config(name, &dir_a), Some(redis().await)).await;
    let b = MultilevelCache::new(config(name, &dir_b), Some(redis().await)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let _: String = a
        .get_or_load("post:1", counting_loader(&calls, "old"))
        .await
        .unwrap();
    b.invalidate_all().await;
    eventually(
        Duration::from_secs(5),
        "replica A to drop the old generation",
        || async {
            let seen: String = a
                .get_or_load("post:1", counting_loader(&calls, "new"))
                .await
                .unwrap();
            seen == "new"
        },
    )
    .await;
    // A fresh replica (nothing local) agrees: the old L2 entry is retired.
    let dir_c = TempDir::new("cache-test");
    let c = MultilevelCache::new(config(name, &dir_c), Some(redis().await)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen: String = c
        .get_or_load("post:1", counting_loader(&calls, "newest"))
        .await
        .unwrap();
    assert_ne!(seen, "old");
}

/// Refresh-ahead: a hundred readers on each of two replicas of a key in its
/// last stretch are all answered from the cache at once, and one reload —
/// on one replica, under the shared lock — brings the new value.
#[tokio::test]
async fn a_hundred_readers_of_a_key_about_to_expire_cause_one_background_load() {
    use common::cache::RefreshAhead;
    use common::lock::{Locks, RedisLocks};
    common::metrics::install().unwrap();
    let name = unique_name();
    let (client, _) = common::redis::connect(&redis_url(), &Default::default())
        .await
        .unwrap();
    let locks = Locks::new(Arc::new(RedisLocks::new(client, format!("{name}-locks:"))));
    let dirs = [TempDir::new("cache-test"), TempDir::new("cache-test")];
    let mut replicas = Vec::new();
    for dir in &dirs {
        let mut config = config(name, dir);
        config.l1_ttl = Duration::from_millis(1000);
        let cache = MultilevelCache::new(config, Some(redis().await))
            .await
            .with_refresh_ahead(RefreshAhead {
                window: Duration::from_millis(600),
                locks: Some(locks.clone()),
            });
        replicas.push(cache);
    }
    let loads = Arc::new(AtomicUsize::new(0));
    let loader = |loads: Arc<AtomicUsize>| {
        move || {
            let loads = loads.clone();
            async move {
                let n = loads.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, Down>(format!("v{n}"))
            }
        }
    };
    for cache in &replicas {
        let first: String = cache
            .get_or_load_refreshing("hot", loader(loads.clone()))
            .await
            .unwrap();
        assert_eq!(
            first, "v1",
            "the second replica finds the first's value in Redis"
        );
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    // Into the last stretch of the entries' life.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut readers = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (cache, loads) = (replicas[i % 2].clone(), loads.clone());
        readers.spawn(async move {
            let started = tokio::time::Instant::now();
            let value: String = cache
                .get_or_load_refreshing("hot", loader(loads))
                .await
                .unwrap();
            (value, started.elapsed())
        });
    }
    for (value, waited) in readers.join_all().await {
        assert_eq!(value, "v1", "answered from the cache");
        assert!(
            waited < Duration::from_millis(150),
            "no reader waits for the load: {waited:?}"
        );
    }
    eventually(Duration::from_secs(3), "the background reload", || async {
        loads.load(Ordering::SeqCst) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        loads.load(Ordering::SeqCst),
        2,
        "one reload across both replicas"
    );
    let counted = format!("cache_refresh_ahead_total{{cache=\"{name}\"}} 1");
    assert!(
        common::metrics::render().lines().any(|l| l == counted),
        "the refresh is counted once: {counted}"
    );
    // Whichever replica reloaded, both serve the new value once their own
    // entries go: from L1 there, from Redis here.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for cache in &replicas {
        let refreshed: String = cache
            .get_or_load("hot", loader(loads.clone()))
            .await
            .unwrap();
        assert_eq!(refreshed, "v2");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}
