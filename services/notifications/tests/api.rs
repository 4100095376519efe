//! The notifications service end to end on its embedded backends: events
//! on the bus become stored notifications, which arrive on their user's
//! live stream (and no one else's), survive reconnection through
//! `Last-Event-ID`, and are read and managed through REST.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use common::events::{CloudEvent, EventBus, MemoryBus};
use common::service::Shared;
use notifications::test_util::{Sse, TestApp, spawn_app, token, user_created};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn app() -> TestApp {
    spawn_app(&[], &Shared::default(), None).await
}

async fn publish(bus: &Arc<MemoryBus>, event: &CloudEvent) {
    bus.publish("users.events", event).await.unwrap();
}

const WAIT: Duration = Duration::from_secs(5);

async fn get(app: &TestApp, user: u64, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", app.base))
        .bearer_auth(token(user))
        .send()
        .await
        .unwrap()
}

/// `path`'s JSON answer for `user`.
async fn json(app: &TestApp, user: u64, path: &str) -> Value {
    get(app, user, path).await.json().await.unwrap()
}

#[tokio::test]
async fn an_event_becomes_a_notification_on_its_users_stream_and_no_one_elses() {
    let app = app().await;
    let mut ann = Sse::open(&app, 7, None).await;
    let mut bob = Sse::open(&app, 8, None).await;
    // The stream is on the wire before any notification exists.
    let hello = ann.next_block(WAIT).await.expect("a first chunk at once");
    assert!(hello.starts_with("retry: "), "{hello}");

    publish(&app.bus, &user_created("e-1", 7, "ann")).await;
    let (id, data) = ann.next_event(WAIT).await.expect("ann's welcome, live");
    assert_eq!(id, 1);
    assert_eq!(data["type"], "info");
    assert_eq!(data["user_id"], 7);
    assert_eq!(data["read"], false);
    assert!(data["message"].as_str().unwrap().contains("ann"), "{data}");
    assert!(
        bob.next_event(Duration::from_millis(500)).await.is_none(),
        "nothing for bob"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_makes_one_notification() {
    let app = app().await;
    let event = user_created("e-twice", 9, "cy");
    publish(&app.bus, &event).await;
    publish(&app.bus, &event).await;
    publish(&app.bus, &user_created("e-after", 9, "cy")).await;
    test_support::eventually(WAIT, "the later event to be applied", || async {
        let page: Value = json(&app, 9, "/api/v1/notifications").await;
        page["notifications"]
            .as_array()
            .is_some_and(|n| n.len() == 2)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_types_and_malformed_payloads_are_skipped_and_later_events_still_apply() {
    let app = app().await;
    let mut unknown = user_created("e-unknown", 3, "di");
    unknown.event_type = "SomethingNew".into();
    publish(&app.bus, &unknown).await;
    let mut malformed = user_created("e-malformed", 3, "di");
    malformed.data = b"{not json".to_vec();
    publish(&app.bus, &malformed).await;
    publish(&app.bus, &user_created("e-good", 3, "di")).await;
    test_support::eventually(WAIT, "the valid event after the bad ones", || async {
        let count: Value = json(&app, 3, "/api/v1/notifications/unread-count").await;
        count["unread"] == 1
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn reconnecting_with_last_event_id_gets_exactly_what_was_missed_then_live_ones() {
    let app = app().await;
    let mut first = Sse::open(&app, 5, None).await;
    publish(&app.bus, &user_created("r-1", 5, "eve")).await;
    let (seen, _) = first.next_event(WAIT).await.unwrap();
    assert_eq!(seen, 1);
    drop(first);
    for n in 2..=4 {
        publish(&app.bus, &user_created(&format!("r-{n}"), 5, "eve")).await;
    }
    test_support::eventually(WAIT, "three more stored", || async {
        let count: Value = json(&app, 5, "/api/v1/notifications/unread-count").await;
        count["unread"] == 4
    })
    .await;
    let mut again = Sse::open(&app, 5, Some("1")).await;
    for expected in 2..=4 {
        let (id, _) = again.next_event(WAIT).await.expect("a missed one");
        assert_eq!(id, expected);
    }
    publish(&app.bus, &user_created("r-5", 5, "eve")).await;
    let (id, _) = again.next_event(WAIT).await.expect("then live");
    assert_eq!(id, 5, "no gap and no duplicate at the seam");
    assert!(again.next_event(Duration::from_millis(300)).await.is_none());
    app.stop().await;
}

#[tokio::test]
async fn rest_lists_reads_and_deletes_only_the_owners_notifications() {
    let app = app().await;
    for n in 1..=3 {
        publish(&app.bus, &user_created(&format!("o-{n}"), 11, "fay")).await;
    }
    publish(&app.bus, &user_created("o-other", 12, "gus")).await;
    test_support::eventually(WAIT, "the events applied", || async {
        let page: Value = json(&app, 12, "/api/v1/notifications").await;
        page["notifications"]
            .as_array()
            .is_some_and(|n| n.len() == 1)
    })
    .await;
    let client = reqwest::Client::new();

    // Paged, newest first.
    let page: Value = json(&app, 11, "/api/v1/notifications?limit=2").await;
    let seqs: Vec<i64> = page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 2]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = get(
        &app,
        11,
        &format!("/api/v1/notifications?limit=2&cursor={cursor}"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(rest["notifications"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());

    // Read one; the unread filter and count follow.
    let id = page["notifications"][0]["id"].as_i64().unwrap();
    let res = client
        .post(format!("{}/api/v1/notifications/{id}/read", app.base))
        .bearer_auth(token(11))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let one: Value = json(&app, 11, &format!("/api/v1/notifications/{id}")).await;
    assert_eq!(one["read"], true);
    let unread: Value = json(&app, 11, "/api/v1/notifications?unread=true").await;
    assert_eq!(unread["notifications"].as_array().unwrap().len(), 2);

    // Another user's notification is as absent as a missing one.
    for (method, path) in [
        ("GET", format!("/api/v1/notifications/{id}")),
        ("POST", format!("/api/v1/notifications/{id}/read")),
        ("DELETE", format!("/api/v1/notifications/{id}")),
    ] {
        let res = client
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .bearer_auth(token(12))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }

    let marked: Value = client
        .post(format!("{}/api/v1/notifications/read-all", app.base))
        .bearer_auth(token(11))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(marked["marked"], 2);
    let res = client
        .delete(format!("{}/api/v1/notifications/{id}", app.base))
        .bearer_auth(token(11))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(&app, 11, &format!("/api/v1/notifications/{id}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // Gus still has his.
    let gus: Value = json(&app, 12, "/api/v1/notifications/unread-count").await;
    assert_eq!(gus["unread"], 1);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let app = app().await;
    let client = reqwest::Client::new();
    let base = &app.base;
    let res = client
        .get(format!("{base}/api/v1/notifications"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "no token");
    let res = client
        .get(format!("{base}/api/v1/notifications/stream"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "a bad token");
    for bad in ["abc", "-3", "1.5"] {
        let res = client
            .get(format!("{base}/api/v1/notifications/stream"))
            .bearer_auth(token(1))
            .header("last-event-id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "Last-Event-ID {bad}");
    }
    for path in [
        "/api/v1/notifications/zero",
        "/api/v1/notifications/0",
        "/api/v1/notifications?limit=0",
        "/api/v1/notifications?limit=1000",
        "/api/v1/notifications?cursor=x",
    ] {
        let res = get(&app, 1, path).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_field", "{path}");
    }
    let res = get(&app, 1, "/api/v1/notifications?unread=maybe").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_query");
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_users_notifications_are_forgotten() {
    let app = app().await;
    publish(&app.bus, &user_created("d-1", 21, "hal")).await;
    let mut deleted = user_created("d-2", 21, "hal");
    deleted.event_type = "UserDeleted".into();
    deleted.data = br#"{"id":21}"#.to_vec();
    publish(&app.bus, &deleted).await;
    publish(&app.bus, &user_created("d-3", 22, "ivy")).await;
    test_support::eventually(WAIT, "ivy's welcome after hal's deletion", || async {
        let ivy: Value = json(&app, 22, "/api/v1/notifications/unread-count").await;
        ivy["unread"] == 1
    })
    .await;
    let hal: Value = json(&app, 21, "/api/v1/notifications/unread-count").await;
    assert_eq!(hal["unread"], 0);
    app.stop().await;
}

#[tokio::test]
async fn open_streams_end_when_the_service_drains() {
    let app = app().await;
    let mut stream = Sse::open(&app, 1, None).await;
    stream.next_block(WAIT).await.expect("the stream opens");
    let stopping = tokio::spawn(app.stop());
    assert!(
        stream.ends_within(WAIT).await,
        "the stream ends, so the client reconnects elsewhere"
    );
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_stream_ends_when_its_access_token_expires() {
    let app = app().await;
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/notifications/stream", app.base))
        .bearer_auth(notifications::test_util::token_for(
            4,
            Duration::from_secs(2),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let started = tokio::time::Instant::now();
    let mut response = response;
    while response.chunk().await.unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(10), "still open");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ended at the token's expiry: {:?}",
        started.elapsed()
    );
    app.stop().await;
}

fn posts_event(event_id: &str, event_type: &str, data: serde_json::Value) -> CloudEvent {
    let mut event = user_created(event_id, 0, "x");
    event.source = "/users".into();
    event.event_type = event_type.into();
    event.data = data.to_string().into_bytes();
    event
}

#[tokio::test]
async fn a_comment_on_a_post_reaches_its_author_live_and_a_comment_on_ones_own_post_does_not() {
    let app = app().await;
    let mut author = Sse::open(&app, 51, None).await;
    author.next_block(WAIT).await.expect("the stream opens");
    let posts = |event: CloudEvent| {
        let bus = app.bus.clone();
        async move { bus.publish("posts.events", &event).await.unwrap() }
    };
    posts(posts_event(
        "p-10",
        "PostCreated",
        json!({"id": 10, "title": "On rivers", "content": "…", "author_id": 51}),
    ))
    .await;
    posts(posts_event(
        "c-10",
        "CommentAdded",
        json!({"id": 1, "post_id": 10, "author_id": 51, "content": "my own"}),
    ))
    .await;
    posts(posts_event(
        "c-11",
        "CommentAdded",
        json!({"id": 2, "post_id": 10, "author_id": 52, "content": "a long comment ".repeat(20)}),
    ))
    .await;
    let (_, told) = author.next_event(WAIT).await.expect("the comment, live");
    assert_eq!(told["title"], "New comment");
    let message = told["message"].as_str().unwrap();
    assert!(message.contains("On rivers"), "{message}");
    assert!(
        message.ends_with('…'),
        "a long comment is quoted in part: {message}"
    );
    assert!(
        author
            .next_event(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing for the author's own comment"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_finished_upload_tells_its_owner_only() {
    let app = app().await;
    let uploaded = CloudEvent {
        id: "file-1".into(),
        source: "/storage".into(),
        event_type: "FileUploaded".into(),
        subject: "f1".into(),
        time: "2026-12-04T12:00:00Z".into(),
        aggregate_version: 1,
        schema_version: 1,
        traceparent: None,
        data: json!({
            "id": "f1", "owner_id": 21, "name": "report.pdf", "size": 1_572_864,
            "content_type": "application/pdf", "sha256": "00"
        })
        .to_string()
        .into_bytes(),
    };
    app.bus.publish("storage.events", &uploaded).await.unwrap();
    let page = test_support::eventually_some(WAIT, "the owner's notification", || async {
        let page = json(&app, 21, "/api/v1/notifications").await;
        (!page["notifications"].as_array().unwrap().is_empty()).then_some(page)
    })
    .await;
    let n = &page["notifications"][0];
    assert_eq!(n["topic"], "file");
    assert_eq!(n["message"], "\"report.pdf\" (1.5 MiB) is stored.");
    let others = json(&app, 22, "/api/v1/notifications").await;
    assert_eq!(others["notifications"], json!([]));
    app.stop().await;
}
