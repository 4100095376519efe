//! A master of a Redis Cluster of the test's own paused (SIGSTOP) until its
//! replica takes over: the cache keeps working through the new master, and
//! a lock on the paused master is either still held (it was replicated) or
//! lost — and then its old holder's write is refused by the fencing token.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use common::cache::{CacheConfig, MultilevelCache, RedisLevel};
use common::lock::{Fence, Locks, RedisLocks};
use test_support::{PrivateRedisCluster, eventually};

fn cache_config() -> CacheConfig {
    CacheConfig {
        name: "failover",
        namespace: "failover".into(),
        l1_capacity: 100,
        l1_ttl: Duration::from_millis(50),
        l2_ttl: Duration::from_secs(60),
        l3_ttl: Duration::from_secs(60),
        disk_dir: None,
        max_value_bytes: CacheConfig::DEFAULT_MAX_VALUE_BYTES,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_master_fails_over_and_the_cache_and_locks_stay_safe() {
    let metrics = common::metrics::install().unwrap();
    let cluster = PrivateRedisCluster::start();
    let url = cluster.url();
    let (client, _) = common::redis::connect(&url, &Default::default())
        .await
        .unwrap();
    let locks = Locks::new(Arc::new(RedisLocks::new(client, "locks:")));
    let resource = Fence::default();
    let writer = MultilevelCache::new(
        cache_config(),
        Some(
            RedisLevel::connect(&url, &Default::default())
                .await
                .unwrap(),
        ),
    )
    .await;

    let reader = MultilevelCache::new(
        cache_config(),
        Some(
            RedisLevel::connect(&url, &Default::default())
                .await
                .unwrap(),
        ),
    )
    .await;
    // Both connected before anything is paused.
    eventually(
        Duration::from_secs(10),
        "the cache to reach the cluster",
        || shared_through_redis(&writer, &reader),
    )
    .await;
    let old = locks
        .try_acquire("index", Duration::from_millis(1500))
        .await
        .unwrap()
        .unwrap();
    assert!(resource.admit(old.fencing_token()));
    let _: String = writer
        .get_or_load("before", || async {
            Ok::<_, std::io::Error>("v1".to_owned())
        })
        .await
        .unwrap();
    // Give replication its moment, then pause the lock's master.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let master = cluster.master_of("locks:{index}");
    let paused = cluster.pause_until_failover(master);

    // The cache works through the new masters: what one replica writes now,
    // the other reads from Redis.
    eventually(
        Duration::from_secs(45),
        "the cache to use Redis again",
        || shared_through_redis(&writer, &reader),
    )
    .await;

    // The clients followed the new topology, and counted it.
    eventually(
        Duration::from_secs(10),
        "the topology change to be counted",
        || async { metrics.render().contains("redis_cluster_changes_total{") },
    )
    .await;

    // The lock: another contender gets it only once the old holder's lease
    // is gone (it was not replicated, or its extensions failed), and then
    // the old holder's late write is refused.
    let contender = locks
        .acquire("index", Duration::from_secs(5), Duration::from_secs(10))
        .await
        .unwrap();
    match contender {
        Some(new) => {
            assert!(
                new.fencing_token() > old.fencing_token(),
                "tokens keep growing across the failover"
            );
            assert!(resource.admit(new.fencing_token()));
            assert!(
                !resource.admit(old.fencing_token()),
                "the stale holder's write is refused"
            );
            let _ = new.release().await;
        }
        None => assert!(
            old.is_held(),
            "the lock survived the failover and is still held"
        ),
    }
    drop(paused);
}

/// Whether what `writer` loads now, `reader` finds in Redis (a fresh key
/// each time, so no tombstone or earlier entry stands in the way).
async fn shared_through_redis(writer: &MultilevelCache, reader: &MultilevelCache) -> bool {
    let key = format!("probe-{}", uuid::Uuid::new_v4().simple());
    let _: Result<String, _> = writer
        .get_or_load(&key, || async {
            Ok::<_, std::io::Error>("written".to_owned())
        })
        .await;
    let seen: Result<String, _> = reader
        .get_or_load(&key, || async {
            Ok::<_, std::io::Error>("not from redis".to_owned())
        })
        .await;
    seen.is_ok_and(|seen| seen == "written")
}
