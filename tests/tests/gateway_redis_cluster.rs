//! The gateway and users on a Redis Cluster, chosen by configuration
//! alone: two gateway replicas share one quota per client, the run-time
//! overrides and the token store (a logout on one ends the token on the
//! other), and the users service caches on the same cluster. A private
//! six-node cluster per test, so counts from other tests never mix in.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::in_process::{Platform, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::PrivateRedisCluster;

const ADMIN: &str = "an admin token for the tests, 32+ bytes";

async fn replica(url: &str) -> Platform {
    Platform::start_with_users(
        &[
            ("GATEWAY_RATE_LIMIT_REQUESTS", "8"),
            ("GATEWAY_RATE_LIMIT_PERIOD", "60s"),
            ("GATEWAY_REDIS_URL", url),
            ("GATEWAY_ADMIN_TOKEN", ADMIN),
        ],
        users::test_util::Options {
            redis_url: Some(url.to_owned()),
            ..Default::default()
        },
    )
    .await
}

async fn get(p: &Platform, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = p.client.get(format!("{}{path}", p.base));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn replicas_on_a_redis_cluster_share_quotas_overrides_and_revocations() {
    let cluster = PrivateRedisCluster::start();
    let url = cluster.url();
    let a = replica(&url).await;
    let b = replica(&url).await;

    // Two of the anonymous client's eight.
    let ann = a.sign_up("ann").await["id"].as_u64().unwrap();
    let pair: Value = a.sign_in("ann").await;
    let access = pair["access_token"].as_str().unwrap();
    let me = format!("/api/v1/users/{ann}");

    // Users reads through its cache on the cluster.
    for _ in 0..2 {
        let res = get(&a, &me, Some(access)).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    // Replica b accepts the token (its own users service has no ann).
    assert_eq!(
        get(&b, &me, Some(access)).await.status(),
        StatusCode::NOT_FOUND
    );

    // A logout on a ends the token on b: the revocation is in the cluster.
    let res = a
        .client
        .post(format!("{}/api/v1/auth/logout", a.base))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    problem(
        get(&b, &me, Some(access)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;

    // The anonymous quota is one count for both replicas: six more pass,
    // alternating between them, and then both refuse.
    let mut passed = 0;
    for n in 0..20 {
        let replica = if n % 2 == 0 { &a } else { &b };
        let res = get(replica, "/api/v1/users/1", None).await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        passed += 1;
    }
    assert_eq!(passed, 6, "eight in all, across both replicas");
    for replica in [&a, &b] {
        problem(
            get(replica, "/api/v1/users/1", None).await,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
        )
        .await;
    }

    // An override set on a is the limit b applies.
    let res = a
        .client
        .put(format!("{}/admin/rate-limits/ip:127.0.0.1", a.admin))
        .bearer_auth(ADMIN)
        .json(&json!({ "limit": 40, "period_seconds": 60 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    test_support::eventually(
        Duration::from_secs(5),
        "replica b applies the override",
        || async {
            get(&b, "/api/v1/users/1", None)
                .await
                .headers()
                .get("x-ratelimit-limit")
                .is_some_and(|l| l == "40")
        },
    )
    .await;
    a.stop().await;
    b.stop().await;
}
