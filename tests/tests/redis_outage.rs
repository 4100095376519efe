//! Redis killed under a running users service and gateway (a private
//! `redis-server` of this test's own): requests keep being answered from
//! the local fallbacks without waiting on Redis, users stays ready, and
//! once Redis is back no stale read is served.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::in_process::Platform;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{PrivateRedis, eventually};

/// The sum of the samples of `name` whose labels contain `labels`.
fn counter(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_requests_skip_it_users_stays_ready_and_nothing_stale_follows() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let options = users::test_util::Options {
        redis_url: Some(url.clone()),
        ..Default::default()
    };
    let p = Platform::start_with_users(&[("GATEWAY_REDIS_URL", &url)], options).await;
    let ann = p.sign_up("ann").await;
    let id = ann["id"].as_u64().unwrap();
    let token = p.login("ann").await;
    let user_url = format!("{}/api/v1/users/{id}", p.base);
    // Cached in every level, Redis included.
    let got: Value = p
        .client
        .get(&user_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["username"], "ann");

    redis.kill();
    for _ in 0..40 {
        let res = p.client.get(&user_url).send().await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "reads are answered without Redis"
        );
    }
    let before = p.metrics().await;
    for _ in 0..40 {
        let res = p.client.get(&user_url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let after = p.metrics().await;
    // Once the guards gave up on Redis, requests no longer try it: the
    // limiter's Redis errors stop growing while its bypasses do.
    let errors = |t: &str| counter(t, "gateway_ratelimit_redis_errors_total", "");
    assert_eq!(
        errors(&before),
        errors(&after),
        "no decision waited on Redis"
    );
    let bypassed =
        |t: &str, user: &str| counter(t, "backend_bypassed_total", &format!("user=\"{user}\""));
    assert!(bypassed(&after, "ratelimit") >= bypassed(&before, "ratelimit") + 40.0);
    // Signed-in requests too: revocations go unchecked (the signature
    // decides) without asking a Redis known to be gone.
    for _ in 0..20 {
        let res = p
            .client
            .get(&user_url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert!(bypassed(&p.metrics().await, "tokens") >= 20.0);
    let users = p.users.as_ref().unwrap();
    let ready = p
        .client
        .get(format!("{}/health/ready", users.host.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "a cache outage is no reason to leave the Service"
    );

    // A write while Redis is gone: its invalidation cannot reach Redis,
    // where the old entry survives (Redis restarts with its data).
    let res = p
        .patch(
            id,
            Some(&token),
            json!({ "username": "anne", "expected_version": 1 }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    redis.restart();
    eventually(
        Duration::from_secs(20),
        "the cache to use Redis again",
        || async {
            let text = p.metrics().await;
            counter(&text, "backend_recovered_total", "user=\"cache\"") >= 1.0
        },
    )
    .await;
    for _ in 0..5 {
        let got: Value = p
            .client
            .get(&user_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            got["username"], "anne",
            "the entry cached before the outage is never served"
        );
    }
    // The outage did not shut anything for good: the limiter is back on Redis.
    eventually(
        Duration::from_secs(20),
        "the limiter to use Redis again",
        || async {
            let text = p.metrics().await;
            counter(&text, "backend_recovered_total", "user=\"ratelimit\"") >= 1.0
        },
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_starts_and_answers_while_its_redis_is_down() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    redis.kill();
    let options = users::test_util::Options {
        redis_url: Some(url),
        ..Default::default()
    };
    // Starting at all is the point: a pod restarted during a Redis outage
    // must not crash-loop over its cache.
    let p = Platform::start_with_users(&[], options).await;
    let ann = p.sign_up("ann").await;
    let id = ann["id"].as_u64().unwrap();
    for _ in 0..3 {
        let res = p
            .client
            .get(format!("{}/api/v1/users/{id}", p.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    // And once Redis is there, the cache takes it up without a restart.
    redis.restart();
    eventually(
        Duration::from_secs(20),
        "the cache to find Redis",
        || async {
            counter(
                &p.metrics().await,
                "backend_recovered_total",
                "user=\"cache\"",
            ) >= 1.0
        },
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_started_while_redis_is_down_takes_it_up_when_it_returns() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    redis.kill();
    let p = Platform::start_with_users(
        &[("GATEWAY_REDIS_URL", &url)],
        users::test_util::Options::default(),
    )
    .await;
    // Sign-up and reads answer, limited in process; a sign-in is refused
    // clearly (its refresh family cannot be recorded), never left hanging.
    let ann = p.sign_up("ann").await;
    let id = ann["id"].as_u64().unwrap();
    let res = p
        .client
        .get(format!("{}/api/v1/users/{id}", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let login = p
        .client
        .post(format!("{}/api/v1/auth/login", p.base))
        .json(&json!({ "login": "ann", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(login.headers().contains_key("retry-after"));

    redis.restart();
    eventually(
        Duration::from_secs(20),
        "the limiter and the token store to find Redis",
        || async {
            let text = p.metrics().await;
            counter(&text, "backend_recovered_total", "user=\"ratelimit\"") >= 1.0
                && counter(&text, "backend_recovered_total", "user=\"tokens\"") >= 1.0
        },
    )
    .await;
    // Now on Redis: sign-ins work, their refresh family and the limiter's
    // counts are kept there.
    let token = p.login("ann").await;
    let res = p
        .client
        .get(format!("{}/api/v1/users/{id}", p.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Each worker's limiter finds Redis on its own probe.
    eventually(
        Duration::from_secs(20),
        "rate-limit counts in Redis",
        || async {
            let _ = p
                .client
                .get(format!("{}/api/v1/users/{id}", p.base))
                .send()
                .await;
            !redis.keys("ratelimit:*").is_empty()
        },
    )
    .await;
    let keys = redis.keys("*");
    assert!(
        keys.iter()
            .any(|k| k.starts_with("auth:{") && k.ends_with(":current")),
        "the sign-in's refresh family in Redis: {keys:?}"
    );
    p.stop().await;
}
