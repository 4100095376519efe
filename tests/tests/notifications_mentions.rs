//! Chat's `UserMentioned` events become notifications for the mentioned
//! user, found by username in a real users service over gRPC (signed as
//! the notifications service): the two services in one test process.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use common::discovery::{Instance, StaticRegistry};
use common::events::{CloudEvent, EventBus};
use common::service::Shared;
use notifications::test_util::{spawn_app, token};
use platform_proto::users::v1 as pb;
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

async fn notifications_of(base: &str, user: u64) -> Vec<Value> {
    let page: Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/notifications"))
        .bearer_auth(token(user))
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
    let users = users::test_util::spawn_app(Default::default(), &Shared::default()).await;
    let mut client = users.users();
    let mut sign_up = async |name: &str| {
        client
            .create_user(pb::CreateUserRequest {
                username: name.into(),
                email: format!("{name}@example.com"),
                password: "correct horse battery".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .id
    };
    let ada = sign_up("ada").await;
    let bob = sign_up("Bob").await;
    let addr = users.host.grpc_url();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let registry = StaticRegistry::new(vec![Instance {
        id: "users-1".into(),
        service: "users".into(),
        host: "127.0.0.1".into(),
        http_port: users.host.http_addr().port(),
        grpc_port: Some(port),
        tags: Vec::new(),
    }]);
    let shared = Shared::default().with_registry(Arc::new(registry));
    let app = spawn_app(&[], &shared, None).await;

    // A name no one has, and oneself: nothing, and the partition goes on.
    for event in [
        mentioned("e1", "nobody", ada),
        mentioned("e2", "ada", ada),
        mentioned("e3", "bob", ada),
        mentioned("e3", "bob", ada),
    ] {
        app.bus.publish("chat.events", &event).await.unwrap();
    }
    let got = test_support::eventually_some(Duration::from_secs(10), "bob's mention", || async {
        let list = notifications_of(&app.base, bob).await;
        (!list.is_empty()).then_some(list)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = notifications_of(&app.base, bob).await;
    assert_eq!(list.len(), 1, "one mention, once: {got:?}");
    assert_eq!(list[0]["topic"], "mention");
    assert_eq!(list[0]["title"], "ada mentioned you in lobby");
    assert_eq!(list[0]["message"], "hello @bob");
    assert!(
        notifications_of(&app.base, ada).await.is_empty(),
        "mentioning oneself tells no one"
    );
    app.stop().await;
    users.stop().await;
}
