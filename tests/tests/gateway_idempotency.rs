//! `Idempotency-Key` on creates, through a real gateway and users service:
//! a retry after a lost answer gets the first answer and creates nothing.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::in_process::{Platform, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

async fn create_post(
    p: &Platform,
    token: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut req = p
        .client
        .post(format!("{}/api/v1/posts", p.base))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    req.send().await.unwrap()
}

async fn posts_of(p: &Platform, user: u64) -> Vec<Value> {
    let page: Value = p
        .client
        .get(format!("{}/api/v1/users/{user}/posts?per_page=100", p.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_create_retried_with_its_key_after_the_connection_was_cut_makes_one_post() {
    let p = Platform::start().await;
    let ann = p.sign_up("ann").await;
    let id = ann["id"].as_u64().unwrap();
    let token = p.login("ann").await;
    let body = json!({ "title": "once", "content": "only once" });
    let key = "6f1c1f0e-8a3b-4c53-9a51-0b6e0f0d2a77";

    // The request goes out whole; the client hangs up before any answer.
    let addr = p.base.trim_start_matches("http://").to_owned();
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let payload = body.to_string();
    let request = format!(
        "POST /api/v1/posts HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{payload}",
        payload.len()
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    raw.shutdown().await.unwrap();
    drop(raw);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let first = create_post(&p, &token, Some(key), &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let location = first.headers()["location"].clone();
    let first: Value = first.json().await.unwrap();
    let again = create_post(&p, &token, Some(key), &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["location"], location);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again, "a retry gets the first answer");
    let posts = posts_of(&p, id).await;
    assert_eq!(
        posts.len(),
        1,
        "one post, whatever the cut call did: {posts:?}"
    );

    // The same key with another body is refused, and makes nothing.
    let other = create_post(
        &p,
        &token,
        Some(key),
        &json!({ "title": "other", "content": "x" }),
    )
    .await;
    problem(
        other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    // Keys are per user: bob's same key is his own.
    p.sign_up("bob").await;
    let bob_token = p.login("bob").await;
    let bob = create_post(&p, &bob_token, Some(key), &body).await;
    assert_eq!(bob.status(), StatusCode::CREATED);
    // Without a key nothing is deduplicated.
    for _ in 0..2 {
        let res = create_post(&p, &token, None, &body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    assert_eq!(posts_of(&p, id).await.len(), 3);

    let bad = create_post(&p, &token, Some("two words"), &body).await;
    problem(bad, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    p.stop().await;
}

#[tokio::test]
async fn a_sign_up_retried_with_its_key_is_one_account() {
    let p = Platform::start().await;
    let sign_up = |key: &'static str| {
        p.client
            .post(format!("{}/api/v1/users", p.base))
            .header("Idempotency-Key", key)
            .json(&json!({ "username": "cara", "email": "cara@example.com", "password": "correct horse battery" }))
            .send()
    };
    let a = sign_up("k-1").await.unwrap();
    assert_eq!(a.status(), StatusCode::CREATED);
    let a: Value = a.json().await.unwrap();
    let b = sign_up("k-1").await.unwrap();
    assert_eq!(
        b.status(),
        StatusCode::CREATED,
        "the retry is answered, not 409"
    );
    let b: Value = b.json().await.unwrap();
    assert_eq!(a, b);
    // A new key is a new attempt: the name is taken now.
    let c = sign_up("k-2").await.unwrap();
    problem(c, StatusCode::CONFLICT, "already_exists").await;
    p.stop().await;
}

#[tokio::test]
async fn a_chat_room_created_twice_with_one_key_through_the_gateway_is_one_room() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let p = Platform::start().await;
            let _chat = p.start_chat(&[]).await;
            p.sign_up("dana").await;
            let token = p.login("dana").await;
            let create = |key: &'static str, name: &'static str| {
                p.client
                    .post(format!("{}/api/v1/chat/rooms", p.base))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", key)
                    .json(&json!({ "name": name, "private": true }))
                    .send()
            };
            let a = create("room-1", "ops").await.unwrap();
            assert_eq!(a.status(), StatusCode::CREATED);
            let a: Value = a.json().await.unwrap();
            let b = create("room-1", "ops").await.unwrap();
            assert_eq!(
                b.status(),
                StatusCode::CREATED,
                "the retry is answered, not 409"
            );
            assert_eq!(a, b.json::<Value>().await.unwrap());
            problem(
                create("room-1", "other").await.unwrap(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
            )
            .await;
            problem(
                create("room-2", "ops").await.unwrap(),
                StatusCode::CONFLICT,
                "room_exists",
            )
            .await;
            let bad = p
                .client
                .post(format!("{}/api/v1/chat/rooms", p.base))
                .bearer_auth(&token)
                .header("Idempotency-Key", "with space")
                .json(&json!({ "name": "x" }))
                .send()
                .await
                .unwrap();
            problem(bad, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
            p.stop().await;
        })
        .await;
}
