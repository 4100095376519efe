//! Two replicas on one PostgreSQL database and one Redis (a single Redis,
//! and the six-node cluster): a notification stored on one reaches the
//! user's stream on the other, and `Last-Event-ID` resumes on either.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use common::events::EventBus;
use common::service::Shared;
use notifications::test_util::{Sse, TestApp, spawn_app, user_created};

const WAIT: Duration = Duration::from_secs(5);

async fn replicas(redis: String) -> (TestApp, TestApp) {
    let database = test_support::backends::fresh_postgres_url("notifications").await;
    let channel = test_support::backends::unique("notifications-live");
    let vars = [
        ("NOTIFICATIONS_DATABASE_URL", database.as_str()),
        ("NOTIFICATIONS_REDIS_URL", redis.as_str()),
        ("NOTIFICATIONS_REDIS_CHANNEL", channel.as_str()),
    ];
    let a = spawn_app(&vars, &Shared::default(), None).await;
    let b = spawn_app(&vars, &Shared::default(), None).await;
    (a, b)
}

async fn stored_on_one_is_live_on_the_other(redis: String) {
    let (a, b) = replicas(redis).await;
    let mut on_b = Sse::open(&b, 31, None).await;
    on_b.next_block(WAIT).await.expect("the stream opens");
    // Both subscribed: what a stores, b's stream gets.
    let mut attempt = 0;
    let first = loop {
        attempt += 1;
        a.bus
            .publish(
                "users.events",
                &user_created(&format!("x-{attempt}"), 31, "kim"),
            )
            .await
            .unwrap();
        if let Some(event) = on_b.next_event(Duration::from_secs(1)).await {
            break event;
        }
        assert!(attempt < 10, "nothing reached the other replica");
    };
    let last = first.0;
    drop(on_b);

    // Two more on b while the client is away; it comes back through a.
    for n in 0..2 {
        b.bus
            .publish("users.events", &user_created(&format!("y-{n}"), 31, "kim"))
            .await
            .unwrap();
    }
    let mut on_a = Sse::open(&a, 31, Some(&last.to_string())).await;
    let mut seen = Vec::new();
    while seen.len() < usize::try_from(attempt).unwrap() - 1 + 2 {
        let (id, _) = on_a.next_event(WAIT).await.expect("the missed ones");
        seen.push(id);
    }
    let expected: Vec<i64> = (last + 1..=last + i64::try_from(seen.len()).unwrap()).collect();
    assert_eq!(seen, expected, "each once, in order, across replicas");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_notification_stored_on_one_replica_reaches_the_stream_on_another() {
    stored_on_one_is_live_on_the_other(test_support::backends::redis_url()).await;
}

#[tokio::test]
async fn on_a_redis_cluster_a_notification_stored_on_one_replica_reaches_the_stream_on_another() {
    stored_on_one_is_live_on_the_other(test_support::backends::redis_cluster_url()).await;
}
