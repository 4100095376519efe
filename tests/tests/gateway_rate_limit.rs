//! Rate limiting through a real gateway against a real Redis: a private
//! `redis-server` per test (so it can be stopped mid-test without touching
//! the machine's shared one).

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use test_support::http::FetchJson;

use e2e::in_process::{Platform, problem};
use reqwest::StatusCode;
use serde_json::json;

struct PrivateRedis {
    child: Child,
    url: String,
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn private_redis() -> PrivateRedis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("redis-server must be installed for this test (make test checks): {e}")
        });
    test_support::eventually(
        Duration::from_secs(5),
        "the private redis-server to accept connections",
        || async { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
    )
    .await;
    PrivateRedis {
        child,
        url: format!("redis://127.0.0.1:{port}"),
    }
}

const ADMIN: &str = "an admin token for the tests, 32+ bytes";

async fn limited(redis: &PrivateRedis, limit: &str) -> Platform {
    Platform::start_with(&[
        ("GATEWAY_RATE_LIMIT_REQUESTS", limit),
        ("GATEWAY_RATE_LIMIT_PERIOD", "60s"),
        ("GATEWAY_REDIS_URL", redis.url.as_str()),
        ("GATEWAY_ADMIN_TOKEN", ADMIN),
    ])
    .await
}

/// Sends GETs until one is refused; returns how many passed.
async fn passes(p: &Platform, token: Option<&str>) -> usize {
    for n in 0..1000 {
        let mut req = p.client.get(format!("{}/api/v1/users/1", p.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
            assert_eq!(res.headers()["ratelimit-remaining"], "0");
            let retry: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
            return n;
        }
        assert!(res.headers().contains_key("x-ratelimit-limit"));
    }
    panic!("never limited");
}

#[tokio::test]
async fn exactly_limit_requests_pass_per_client_and_others_are_unaffected() {
    let redis = private_redis().await;
    let p = limited(&redis, "6").await;
    // Sign-up and login are two of the anonymous client's six.
    p.sign_up("ann").await;
    let token = p.login("ann").await;
    assert_eq!(passes(&p, None).await, 4, "anonymous: 6 in all");
    assert_eq!(
        passes(&p, Some(&token)).await,
        6,
        "the signed-in user has a quota of their own"
    );
    p.stop().await;
}

#[tokio::test]
async fn a_run_time_override_takes_effect_and_needs_the_admin_token() {
    let redis = private_redis().await;
    let p = limited(&redis, "3").await;
    let url = format!("{}/admin/rate-limits/ip:127.0.0.1", p.admin);
    let body = json!({ "limit": 10, "period_seconds": 60 });
    let res = p.client.put(&url).json(&body).send().await.unwrap();
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = p
        .client
        .put(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    assert_eq!(passes(&p, None).await, 3);
    let res = p
        .client
        .put(&url)
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The override's bigger bucket applies to the same key at once.
    let res = p
        .client
        .get(format!("{}/api/v1/users/1", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-ratelimit-limit"], "10");
    assert_ne!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // Neither the admin API nor the metrics are on the public port,
    // whatever the token.
    let public = p
        .client
        .put(format!("{}/admin/rate-limits/ip:127.0.0.1", p.base))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(public, StatusCode::NOT_FOUND, "not_found").await;
    let metrics = p
        .client
        .get(format!("{}/metrics", p.base))
        .send()
        .await
        .unwrap();
    problem(metrics, StatusCode::NOT_FOUND, "not_found").await;

    let listed: serde_json::Value = p
        .client
        .get(format!("{}/admin/rate-limits", p.admin))
        .bearer_auth(ADMIN)
        .fetch_json()
        .await;
    assert_eq!(listed["overrides"][0]["key"], "ip:127.0.0.1");
    let bad = p
        .client
        .put(format!("{}/admin/rate-limits/ip:127.0.0.1", p.admin))
        .bearer_auth(ADMIN)
        .json(&json!({ "limit": 0, "period_seconds": 60 }))
        .send()
        .await
        .unwrap();
    problem(bad, StatusCode::BAD_REQUEST, "invalid_quota").await;
    p.stop().await;
}

#[tokio::test]
async fn with_the_token_store_down_refresh_fails_closed_and_access_tokens_still_work() {
    let mut redis = private_redis().await;
    let p = limited(&redis, "1000").await;
    let ann = p.sign_up("ann").await;
    let id = ann["id"].as_u64().unwrap();
    let session = p.sign_in("ann").await;
    let access = session["access_token"].as_str().unwrap().to_owned();
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();

    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    // Closed: no new session while revocations cannot be checked.
    let res = p
        .client
        .post(format!("{}/api/v1/auth/refresh", p.base))
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("retry-after"));
    problem(res, StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable").await;
    // Open: the short-lived access token still signs requests.
    let res = p
        .patch(id, Some(&access), json!({ "username": "anne" }))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    p.stop().await;
}

#[tokio::test]
async fn redis_stopped_mid_test_falls_back_and_requests_are_still_answered() {
    let mut redis = private_redis().await;
    let p = limited(&redis, "1000").await;
    let res = p
        .client
        .get(format!("{}/api/v1/users/1", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-ratelimit-limit"], "1000");

    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let res = p
            .client
            .get(format!("{}/api/v1/users/1", p.base))
            .send()
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "no hang while Redis is down"
        );
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "still answered");
        assert_eq!(
            res.headers()["x-ratelimit-limit"],
            "1000",
            "limited in process"
        );
    }
    let metrics = p
        .client
        .get(format!("{}/metrics", p.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Decisions skipped Redis (its connection error marked it down at
    // once) rather than each waiting for it to fail.
    let bypassed = metrics
        .lines()
        .find(|l| l.starts_with("backend_bypassed_total{backend=\"redis\",user=\"ratelimit\"}"))
        .expect("the fallback is visible in metrics");
    assert!(!bypassed.ends_with(" 0"), "{bypassed}");
    p.stop().await;
}

#[tokio::test]
async fn an_override_set_on_one_replica_applies_on_every_replica_sharing_redis() {
    let redis = private_redis().await;
    let a = limited(&redis, "3").await;
    let b = limited(&redis, "3").await;
    let key = "user:424242";
    let res = a
        .client
        .put(format!("{}/admin/rate-limits/{key}", a.admin))
        .bearer_auth(ADMIN)
        .json(&json!({ "limit": 42, "period_seconds": 60 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Replica b learns it from Redis, without being told.
    test_support::eventually(
        Duration::from_secs(5),
        "replica b lists the override",
        || async {
            let listed: serde_json::Value = b
                .client
                .get(format!("{}/admin/rate-limits", b.admin))
                .bearer_auth(ADMIN)
                .fetch_json()
                .await;
            listed["overrides"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["key"] == key && o["limit"] == 42))
        },
    )
    .await;
    // And b enforces it: an override for this client, set on a, is the
    // limit b answers with.
    let me = "ip:127.0.0.1";
    let res = a
        .client
        .put(format!("{}/admin/rate-limits/{me}", a.admin))
        .bearer_auth(ADMIN)
        .json(&json!({ "limit": 40, "period_seconds": 60 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    test_support::eventually(Duration::from_secs(5), "replica b applies it", || async {
        let res = b
            .client
            .get(format!("{}/api/v1/users/1", b.base))
            .send()
            .await
            .unwrap();
        res.headers()
            .get("x-ratelimit-limit")
            .is_some_and(|l| l == "40")
    })
    .await;
    let res = a
        .client
        .delete(format!("{}/admin/rate-limits/{me}", a.admin))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // A replica started later has it too.
    let c = limited(&redis, "3").await;
    test_support::eventually(
        Duration::from_secs(5),
        "a new replica lists the override",
        || async {
            let listed: serde_json::Value = c
                .client
                .get(format!("{}/admin/rate-limits", c.admin))
                .bearer_auth(ADMIN)
                .fetch_json()
                .await;
            listed["overrides"].as_array().is_some_and(|o| o.len() == 1)
        },
    )
    .await;
    // Removed on b: gone from a as well.
    let res = b
        .client
        .delete(format!("{}/admin/rate-limits/{key}", b.admin))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    test_support::eventually(
        Duration::from_secs(5),
        "replica a forgets the override",
        || async {
            let listed: serde_json::Value = a
                .client
                .get(format!("{}/admin/rate-limits", a.admin))
                .bearer_auth(ADMIN)
                .fetch_json()
                .await;
            listed["overrides"].as_array().is_some_and(Vec::is_empty)
        },
    )
    .await;
    for p in [a, b, c] {
        p.stop().await;
    }
}
