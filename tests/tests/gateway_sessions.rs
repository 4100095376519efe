//! Sessions through the gateway: refresh rotation, reuse detection and
//! logout, with the in-process token store (the Redis one passes the same
//! contract in `crates/common/tests/token_store.rs`).

#![allow(clippy::unwrap_used)]

use e2e::in_process::{Platform, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn refresh(p: &Platform, token: &Value) -> reqwest::Response {
    p.client
        .post(format!("{}/api/v1/auth/refresh", p.base))
        .json(&json!({ "refresh_token": token }))
        .send()
        .await
        .unwrap()
}

async fn me(p: &Platform, id: u64, access: &Value) -> reqwest::Response {
    p.client
        .get(format!("{}/api/v1/users/{id}", p.base))
        .bearer_auth(access.as_str().unwrap())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_refresh_token_works_once_and_a_reused_one_revokes_the_family() {
    let p = Platform::start().await;
    let ann = p.sign_up("ann").await["id"].as_u64().unwrap();
    let first = p.sign_in("ann").await;
    assert!(first["refresh_expires_in"].as_u64().unwrap() > first["expires_in"].as_u64().unwrap());

    let res = refresh(&p, &first["refresh_token"]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await.unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(
        me(&p, ann, &second["access_token"]).await.status(),
        StatusCode::OK
    );

    // The first refresh token again: stolen, or replayed. The whole
    // sign-in ends, the legitimate holder's newest tokens included.
    let reused = refresh(&p, &first["refresh_token"]).await;
    problem(reused, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let newest = refresh(&p, &second["refresh_token"]).await;
    problem(newest, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let access = me(&p, ann, &second["access_token"]).await;
    problem(access, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Another sign-in is another family, untouched.
    let other = p.sign_in("ann").await;
    assert_eq!(
        refresh(&p, &other["refresh_token"]).await.status(),
        StatusCode::OK
    );
    p.stop().await;
}

#[tokio::test]
async fn an_access_token_is_no_refresh_token_and_garbage_is_refused() {
    let p = Platform::start().await;
    p.sign_up("ann").await;
    let pair = p.sign_in("ann").await;
    for bad in [pair["access_token"].clone(), json!("garbage")] {
        problem(
            refresh(&p, &bad).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    p.stop().await;
}

#[tokio::test]
async fn logout_ends_the_access_and_the_refresh_token_at_once() {
    let p = Platform::start().await;
    let ann = p.sign_up("ann").await["id"].as_u64().unwrap();
    let pair = p.sign_in("ann").await;
    let res = p
        .client
        .post(format!("{}/api/v1/auth/logout", p.base))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    problem(
        me(&p, ann, &pair["access_token"]).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    problem(
        refresh(&p, &pair["refresh_token"]).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    p.stop().await;
}

#[tokio::test]
async fn a_deleted_account_cannot_refresh() {
    let p = Platform::start().await;
    let ann = p.sign_up("ann").await["id"].as_u64().unwrap();
    let pair = p.sign_in("ann").await;
    let res = p
        .client
        .delete(format!("{}/api/v1/users/{ann}", p.base))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    problem(
        refresh(&p, &pair["refresh_token"]).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    p.stop().await;
}
