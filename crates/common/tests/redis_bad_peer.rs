//! A "Redis" that answers garbage (a misconfigured port, a proxy speaking
//! another protocol, a corrupted stream): every Redis user gets a clear
//! error or falls back, within its timeouts, and nothing panics.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use common::cache::{CacheConfig, MultilevelCache, RedisLevel};
use common::counters::{Counters, RedisCounters};
use common::lock::{LockError, Locks, RedisLocks};
use common::redis::RedisOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the fake peer says to every request.
#[derive(Clone, Copy)]
enum Garbage {
    /// Bytes that are not RESP at all.
    NotResp,
    /// Valid RESP of the wrong kind: `+OK` to everything.
    AlwaysOk,
}

/// A listener on a random loopback port answering each read with
/// `garbage`; its URL.
async fn peer(garbage: Garbage) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0_u8; 4096];
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    let answer: &[u8] = match garbage {
                        Garbage::NotResp => b"HTTP/1.1 400 Bad Request\r\n\xff\x00\x13garbage\r\n",
                        Garbage::AlwaysOk => b"+OK\r\n",
                    };
                    if socket.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("redis://127.0.0.1:{port}")
}

fn options() -> RedisOptions {
    RedisOptions {
        command_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(500),
        pubsub_buffer: None,
    }
}

#[tokio::test]
async fn connecting_to_a_peer_that_speaks_no_resp_fails_with_an_error_naming_it() {
    let url = peer(Garbage::NotResp).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        common::redis::connect(&url, &options()),
    )
    .await
    .expect("fails within the connect timeout, not for ever");
    let Err(error) = outcome else {
        panic!("a peer answering garbage is not a Redis");
    };
    let line = common::exit::chain(&error);
    assert!(line.contains(&url), "{line}");
}

#[tokio::test]
async fn the_cache_serves_from_its_loader_when_redis_answers_garbage() {
    for garbage in [Garbage::NotResp, Garbage::AlwaysOk] {
        let url = peer(garbage).await;
        let level = RedisLevel::connect(&url, &options()).await.unwrap();
        let cache = MultilevelCache::new(
            CacheConfig {
                name: "bad-peer",
                namespace: "bad-peer".into(),
                l1_capacity: 0,
                l1_ttl: Duration::from_millis(1),
                l2_ttl: Duration::from_secs(60),
                l3_ttl: Duration::from_secs(60),
                disk_dir: None,
                max_value_bytes: CacheConfig::DEFAULT_MAX_VALUE_BYTES,
            },
            Some(level),
        )
        .await;
        for _ in 0..3 {
            let value: String = tokio::time::timeout(
                Duration::from_secs(5),
                cache.get_or_load("user:1", || async { Ok::<_, std::io::Error>("ann".into()) }),
            )
            .await
            .expect("answered within the command timeouts")
            .unwrap();
            assert_eq!(value, "ann");
        }
    }
}

#[tokio::test]
async fn locks_and_counters_report_unavailable_when_redis_answers_garbage() {
    for garbage in [Garbage::NotResp, Garbage::AlwaysOk] {
        let url = peer(garbage).await;
        let client =
            common::redis::background_client(common::redis::parse(&url).unwrap(), &options())
                .unwrap();
        let locks = Locks::new(Arc::new(RedisLocks::new(client.clone(), "locks:")));
        let taken = tokio::time::timeout(
            Duration::from_secs(5),
            locks.try_acquire("reindex", Duration::from_secs(1)),
        )
        .await
        .expect("answered within the command timeout");
        assert!(
            matches!(taken, Err(LockError::Unavailable(_))),
            "{:?}",
            taken.map(|g| g.map(|g| g.fencing_token()))
        );
        let counters = Counters::new(Arc::new(RedisCounters::new(client, "counters:")));
        let added = tokio::time::timeout(
            Duration::from_secs(5),
            counters.add("logins", 1, Duration::from_secs(60)),
        )
        .await
        .expect("answered within the command timeout");
        assert!(added.is_err(), "{added:?}");
    }
}
