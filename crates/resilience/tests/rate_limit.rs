//! Contract tests for the rate limiters: in process, and in the machine's
//! Redis (`TEST_REDIS_URL`, default `redis://127.0.0.1:6379`; a missing
//! server fails the test).

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // test clients of servers the test starts

use std::sync::Arc;
use std::time::Duration;
use test_support::contract;

use fred::prelude::*;
use resilience::clock::SystemClock;
use resilience::rate_limit::{Coalescing, MemoryLimiter, Quota, RateLimiter, RedisLimiter};

async fn connected(url: &str) -> Client {
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client
        .init()
        .await
        .unwrap_or_else(|e| panic!("{}", test_support::backends::missing("Redis", url, &e)));
    client
}

async fn limiters() -> Vec<(&'static str, Arc<dyn RateLimiter>)> {
    let url = test_support::backends::redis_url();
    let client = connected(&url).await;
    let cluster = connected(&test_support::backends::redis_cluster_url()).await;
    let prefix = format!("ratelimit-test:{}:", uuid::Uuid::new_v4().simple());
    vec![
        (
            "memory",
            Arc::new(MemoryLimiter::new(Arc::new(SystemClock))),
        ),
        (
            "redis",
            Arc::new(RedisLimiter::new(client.clone(), prefix.clone())),
        ),
        (
            "redis-cluster",
            Arc::new(RedisLimiter::new(cluster, format!("{prefix}cluster:"))),
        ),
        (
            "coalesced redis",
            Arc::new(Coalescing::new(RedisLimiter::new(
                client,
                format!("{prefix}coalesced:"),
            ))),
        ),
    ]
}

#[tokio::test]
async fn exactly_limit_requests_pass_and_other_clients_are_unaffected() {
    contract(limiters().await, |backend, limiter| async move {
        let quota = Quota::per_minute(10);
        let mut passed = 0;
        let mut last = None;
        for _ in 0..25 {
            let decision = limiter.check("client-a", quota).await.unwrap();
            if decision.allowed {
                passed += 1;
            }
            last = Some(decision);
        }
        assert_eq!(passed, 10, "{backend}");
        let rejected = last.unwrap();
        assert_eq!(rejected.remaining, 0);
        let retry = rejected.retry_after.unwrap();
        assert!(
            retry > Duration::from_secs(5) && retry <= Duration::from_secs(6),
            "{backend}: {retry:?}"
        );

        let other = limiter.check("client-b", quota).await.unwrap();
        assert!(other.allowed, "{backend}");
        assert_eq!(other.remaining, 9);
        assert_eq!(other.limit, 10);
    })
    .await;
}

#[tokio::test]
async fn the_quota_refills_at_the_sustained_rate() {
    contract(limiters().await, |backend, limiter| async move {
        let quota = Quota::per_second(4); // one every 250 ms
        for _ in 0..4 {
            assert!(
                limiter.check("refill", quota).await.unwrap().allowed,
                "{backend}"
            );
        }
        assert!(
            !limiter.check("refill", quota).await.unwrap().allowed,
            "{backend}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            limiter.check("refill", quota).await.unwrap().allowed,
            "{backend}: one refilled"
        );
        assert!(
            !limiter.check("refill", quota).await.unwrap().allowed,
            "{backend}: only one"
        );
    })
    .await;
}

#[tokio::test]
async fn a_reset_key_starts_from_a_full_bucket() {
    contract(limiters().await, |backend, limiter| async move {
        let quota = Quota::per_minute(2);
        for _ in 0..2 {
            assert!(limiter.check("reset", quota).await.unwrap().allowed);
        }
        assert!(
            !limiter.check("reset", quota).await.unwrap().allowed,
            "{backend}"
        );
        limiter.reset("reset").await.unwrap();
        assert!(
            limiter.check("reset", quota).await.unwrap().allowed,
            "{backend}"
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_requests_never_exceed_the_quota() {
    contract(limiters().await, |backend, limiter| async move {
        let quota = Quota::per_minute(50);
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                limiter.check("burst", quota).await.unwrap().allowed
            }));
        }
        let mut passed = 0;
        for task in tasks {
            passed += usize::from(task.await.unwrap());
        }
        assert_eq!(passed, 50, "{backend}");
    })
    .await;
}

#[tokio::test]
async fn a_batch_admits_the_first_requests_the_quota_holds() {
    contract(limiters().await, |backend, limiter| async move {
        let quota = Quota::per_minute(10);
        assert!(limiter.check("batch", quota).await.unwrap().allowed);
        let decisions = limiter.check_batch("batch", quota, 12).await.unwrap();
        assert_eq!(decisions.len(), 12, "{backend}");
        let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
        assert_eq!(
            allowed,
            [[true; 9].as_slice(), &[false; 3]].concat(),
            "{backend}"
        );
        let remaining: Vec<u32> = decisions[..9].iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, [8, 7, 6, 5, 4, 3, 2, 1, 0], "{backend}");
        assert!(
            decisions[9].retry_after.unwrap() > Duration::from_secs(5),
            "{backend}"
        );
        assert!(
            !limiter.check("batch", quota).await.unwrap().allowed,
            "{backend}"
        );
    })
    .await;
}
