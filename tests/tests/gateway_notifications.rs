//! Notifications through the gateway: the token is checked there
//! (revocation included), browsers use a single-use ticket, and the event
//! stream is relayed as it comes, past the upstream timeout.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use common::events::EventBus;
use e2e::in_process::{Platform, problem};
use reqwest::StatusCode;
use serde_json::Value;

/// Reads `res` until `needle` has arrived, within `wait`.
async fn read_until(res: &mut reqwest::Response, needle: &str, wait: Duration) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + wait;
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .unwrap_or_else(|_| panic!("{needle:?} within {wait:?}; had {seen:?}"))
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    seen
}

#[tokio::test]
async fn the_stream_needs_a_token_and_relays_each_notification_as_it_comes() {
    // Shorter than the wait below: a stream outlives the upstream timeout.
    let p = Platform::start_with(&[("GATEWAY_UPSTREAM_TIMEOUT", "1s")]).await;
    let notifications = p.start_notifications().await;
    let stream = format!("{}/api/v1/notifications/stream", p.base);

    let res = p.client.get(&stream).send().await.unwrap();
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let ann = p.sign_up("ann").await["id"].as_u64().unwrap();
    let token = p.login("ann").await;
    let mut res = p
        .client
        .get(&stream)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    // The first byte before the first notification: nothing is buffered.
    read_until(&mut res, "retry: ", Duration::from_secs(5)).await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    notifications
        .bus
        .publish(
            "users.events",
            &notifications::test_util::user_created("w-1", i64::try_from(ann).unwrap(), "ann"),
        )
        .await
        .unwrap();
    let seen = read_until(&mut res, "event: notification", Duration::from_secs(5)).await;
    assert!(seen.contains("id: 1\n"), "{seen}");
    drop(res);

    // REST through the gateway sees the same notification.
    let page: Value = p
        .client
        .get(format!("{}/api/v1/notifications", p.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["notifications"][0]["user_id"], ann);

    // A browser: a ticket, once.
    let ticket: Value = p
        .client
        .post(format!("{}/api/v1/auth/ticket", p.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = ticket["ticket"].as_str().unwrap();
    let with_ticket = format!("{stream}?ticket={ticket}");
    let mut res = p.client.get(&with_ticket).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    read_until(&mut res, "retry: ", Duration::from_secs(5)).await;
    drop(res);
    let again = p.client.get(&with_ticket).send().await.unwrap();
    problem(again, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let in_url = p
        .client
        .get(format!("{stream}?access_token={token}"))
        .send()
        .await
        .unwrap();
    problem(in_url, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Signed out: the gateway refuses the token, though its signature holds.
    let res = p
        .client
        .post(format!("{}/api/v1/auth/logout", p.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for path in ["/api/v1/notifications/stream", "/api/v1/notifications"] {
        let res = p
            .client
            .get(format!("{}{path}", p.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    notifications.stop().await;
    p.stop().await;
}
