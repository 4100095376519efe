//! Sign-in and sign-up are limited per account and per email, not only
//! per address: guesses at one account from many addresses count as one.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // test clients of servers the test starts

use common::service::Shared;
use gateway::test_util::{TestApp, spawn_app};
use reqwest::StatusCode;
use serde_json::json;
use test_support::http::problem;

async fn login(p: &TestApp, name: &str, from: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", p.base))
        .header("x-forwarded-for", from)
        .json(&json!({ "login": name, "password": "guess" }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_account_whatever_the_address() {
    // Behind a trusted proxy, every attempt comes from another client.
    let p = spawn_app(
        &[
            ("GATEWAY_TRUSTED_PROXIES", "127.0.0.1"),
            ("GATEWAY_LOGIN_ATTEMPTS_PER_ACCOUNT", "2"),
        ],
        &Shared::default(),
    )
    .await;
    // No users service runs here: an admitted attempt is a 503.
    for from in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(
            login(&p, "ann", from).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let res = login(&p, " ANN ", "203.0.113.3").await;
    assert!(res.headers().contains_key("retry-after"));
    problem(res, 429, "rate_limited").await;
    assert_eq!(
        login(&p, "bob", "203.0.113.3").await.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "another account is not affected"
    );
    p.stop().await;
}

#[tokio::test]
async fn sign_ups_are_limited_per_email() {
    let p = spawn_app(&[("GATEWAY_SIGNUPS_PER_EMAIL", "1")], &Shared::default()).await;
    let sign_up = |email: &'static str, name: &'static str| {
        let base = p.base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/users"))
                .json(&json!({ "username": name, "email": email, "password": "long enough pw" }))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        sign_up("ann@example.com", "ann").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    problem(
        sign_up("Ann@Example.com", "ann2").await,
        429,
        "rate_limited",
    )
    .await;
    assert_eq!(
        sign_up("bob@example.com", "bob").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    p.stop().await;
}
