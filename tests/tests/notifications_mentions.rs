//! Chat's `UserMentioned` events become notifications for the mentioned
//! user, found by username in a real users service over gRPC (signed as
//! the notifications service), read through the gateway: the services in
//! one test process.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::Duration;

use common::events::{CloudEvent, EventBus};
use e2e::in_process::Platform;
use serde_json::{Value, json};

fn mentioned(id: &str, name: &str, by: u64) -> CloudEvent {
    CloudEvent {
        id: id.to_owned(),
        source: "/chat".into(),
        event_type: "UserMentioned".into(),
        subject: "lobby".into(),
        time: "2026-12-04T12:00:00Z".into(),
        aggregate_version: 1,
        schema_version: 1,
        traceparent: None,
        data: json!({
            "room": "lobby",
            "message_id": "m1",
            "mentioned_username": name,
            "by_user_id": by,
            "by_username": "ada",
            "excerpt": format!("hello @{name}"),
        })
        .to_string()
        .into_bytes(),
    }
}

/// `token`'s notifications, read through the gateway.
async fn notifications_of(p: &Platform, token: &str) -> Vec<Value> {
    let page: Value = p
        .client
        .get(format!("{}/api/v1/notifications", p.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["notifications"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_mention_notifies_the_user_it_names_and_no_one_else() {
    let p = Platform::start().await;
    let notifications = p.start_notifications().await;
    let ada = p.sign_up("ada").await["id"].as_u64().unwrap();
    p.sign_up("Bob").await;
    let (ada_token, bob_token) = (p.login("ada").await, p.login("Bob").await);

    // A name no one has, and oneself: nothing, and the partition goes on.
    for event in [
        mentioned("e1", "nobody", ada),
        mentioned("e2", "ada", ada),
        mentioned("e3", "bob", ada),
        mentioned("e3", "bob", ada),
    ] {
        notifications
            .bus
            .publish("chat.events", &event)
            .await
            .unwrap();
    }
    let got = test_support::eventually_some(Duration::from_secs(10), "bob's mention", || async {
        let list = notifications_of(&p, &bob_token).await;
        (!list.is_empty()).then_some(list)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = notifications_of(&p, &bob_token).await;
    assert_eq!(list.len(), 1, "one mention, once: {got:?}");
    assert_eq!(list[0]["topic"], "mention");
    assert_eq!(list[0]["title"], "ada mentioned you in lobby");
    assert_eq!(list[0]["message"], "hello @bob");
    assert!(
        notifications_of(&p, &ada_token).await.is_empty(),
        "mentioning oneself tells no one"
    );
    notifications.stop().await;
    p.stop().await;
}
