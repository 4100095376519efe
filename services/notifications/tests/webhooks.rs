//! Webhooks end to end, on the embedded backends and a receiver of the
//! test's own: signed deliveries that verify, retries, dead letters,
//! disabling, rotation, re-sends, and the URLs that are refused.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

#[path = "support/receiver.rs"]
mod receiver;

use std::collections::BTreeSet;
use std::time::Duration;

use common::events::{CloudEvent, EventBus};
use common::service::Shared;
use notifications::test_util::{TestApp, spawn_app, token, user_created};
use notifications::webhooks::signing::{Secret, verifies};
use receiver::{Answer, Receiver};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::eventually;

const WAIT: Duration = Duration::from_secs(10);

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn call(
    app: &TestApp,
    user: u64,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = client()
        .request(method, format!("{}/api/v1/notifications{path}", app.base))
        .bearer_auth(token(user));
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

/// The service with deliveries allowed to `receivers` over plain http,
/// quick retries, and `extra` settings.
async fn app_for(receivers: &[&Receiver], extra: &[(&str, &str)]) -> TestApp {
    let allowed = receivers
        .iter()
        .map(|r| r.authority.clone())
        .collect::<Vec<_>>()
        .join(",");
    let mut vars = vec![
        ("NOTIFICATIONS_WEBHOOK_HTTP_ALLOWED", allowed.as_str()),
        ("NOTIFICATIONS_WEBHOOK_RETRY_BASE", "50ms"),
        ("NOTIFICATIONS_WEBHOOK_RETRY_MAX", "200ms"),
        ("NOTIFICATIONS_WEBHOOK_MAX_ATTEMPTS", "5"),
        ("NOTIFICATIONS_WEBHOOK_TIMEOUT", "2s"),
    ];
    vars.extend_from_slice(extra);
    spawn_app(&vars, &Shared::default(), None).await
}

/// Registers `url` for `user`: (webhook id, secret).
async fn register(app: &TestApp, user: u64, url: &str) -> (i64, Secret) {
    let res = call(
        app,
        user,
        reqwest::Method::POST,
        "/webhooks",
        Some(json!({ "url": url })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["webhook"]["enabled"], true);
    let secret = Secret::parse(body["secret"].as_str().unwrap()).unwrap();
    (body["webhook"]["id"].as_i64().unwrap(), secret)
}

async fn welcome(app: &TestApp, user: i64) {
    app.bus
        .publish(
            "users.events",
            &user_created(&format!("evt-{user}-{}", uuid()), user, "ada"),
        )
        .await
        .unwrap();
}

fn uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn post_event(id: &str, event_type: &str, data: Value) -> CloudEvent {
    CloudEvent {
        id: id.to_owned(),
        source: "/users".into(),
        event_type: event_type.into(),
        subject: "1".into(),
        time: "2026-12-04T12:00:00Z".into(),
        aggregate_version: 1,
        schema_version: 1,
        traceparent: None,
        data: data.to_string().into_bytes(),
    }
}

/// `path`'s JSON answer for `user`.
async fn get(app: &TestApp, user: u64, path: &str) -> Value {
    call(app, user, reqwest::Method::GET, path, None)
        .await
        .json()
        .await
        .unwrap()
}

async fn deliveries(app: &TestApp, user: u64, webhook: i64) -> Vec<Value> {
    let body: Value = get(app, user, &format!("/webhooks/{webhook}/deliveries")).await;
    body["deliveries"].as_array().unwrap().clone()
}

/// Waits until the endpoint's newest delivery is in `state`.
async fn delivery_in(app: &TestApp, user: u64, webhook: i64, state: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        if let Some(d) = deliveries(app, user, webhook).await.into_iter().next() {
            if d["state"] == state {
                return d;
            }
            last = d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the delivery never became {state}: {last}");
}

fn verified(secret: &Secret, hit: &receiver::Hit) -> bool {
    let timestamp: i64 = hit.header("webhook-timestamp").parse().unwrap();
    verifies(
        secret,
        hit.header("webhook-signature"),
        hit.header("webhook-id"),
        timestamp,
        &hit.body,
    )
}

#[tokio::test]
async fn a_receiver_failing_twice_then_succeeding_is_delivered_once_with_a_signature_that_verifies()
{
    let receiver = Receiver::start(vec![
        Answer::Status(500),
        Answer::Status(503),
        Answer::Status(204),
    ]);
    let app = app_for(&[&receiver], &[]).await;
    let (hook, secret) = register(&app, 7, &receiver.url).await;
    welcome(&app, 7).await;

    let delivery = delivery_in(&app, 7, hook, "delivered").await;
    let statuses: Vec<i64> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 503, 204]);
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3, "two failures and one success");
    for hit in &hits {
        assert_eq!(
            hit.header("webhook-id"),
            delivery["id"],
            "one id on every retry"
        );
        assert!(verified(&secret, hit), "the signature verifies");
        assert_eq!(hit.header("content-type"), "application/json");
    }
    let body: Value = serde_json::from_slice(&hits[2].body).unwrap();
    assert_eq!(body["type"], "notification.created");
    assert_eq!(body["data"]["user_id"], 7);
    assert_eq!(body["data"]["topic"], "welcome");
    // Nothing more comes once it succeeded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.hits().len(), 3);
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_receiver_that_always_fails_is_dead_lettered_after_the_configured_attempts() {
    let receiver = Receiver::start(vec![Answer::Status(500)]);
    let app = app_for(&[&receiver], &[("NOTIFICATIONS_WEBHOOK_MAX_ATTEMPTS", "3")]).await;
    let (hook, _) = register(&app, 8, &receiver.url).await;
    welcome(&app, 8).await;

    let delivery = delivery_in(&app, 8, hook, "dead").await;
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.hits().len(), 3, "no attempt after the last");
    // The endpoint stays enabled: it has not failed for a day.
    let hook: Value = get(&app, 8, &format!("/webhooks/{hook}")).await;
    assert_eq!(hook["enabled"], true);
    assert!(hook["failing_since"].is_string());
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_past_the_window_is_disabled_its_owner_told_and_it_can_come_back() {
    let receiver = Receiver::start(vec![Answer::Status(500)]);
    let app = app_for(
        &[&receiver],
        &[
            ("NOTIFICATIONS_WEBHOOK_DISABLE_AFTER", "300ms"),
            ("NOTIFICATIONS_WEBHOOK_MAX_ATTEMPTS", "50"),
        ],
    )
    .await;
    let (hook, _) = register(&app, 9, &receiver.url).await;
    welcome(&app, 9).await;

    let dead = delivery_in(&app, 9, hook, "dead").await;
    let res = call(
        &app,
        9,
        reqwest::Method::POST,
        &format!(
            "/webhooks/{hook}/deliveries/{}/resend",
            dead["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    test_support::http::problem(res, 409, "webhook_disabled").await;
    let state: Value = get(&app, 9, &format!("/webhooks/{hook}")).await;
    assert_eq!(state["enabled"], false);
    let list: Value = get(&app, 9, "").await;
    let titles: Vec<&str> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    assert!(titles.contains(&"Webhook disabled"), "{titles:?}");
    let failed = receiver.hits().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.hits().len(),
        failed,
        "a disabled endpoint gets nothing"
    );

    let enabled: Value = call(
        &app,
        9,
        reqwest::Method::POST,
        &format!("/webhooks/{hook}/enable"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(enabled["enabled"], true);
    assert!(enabled.get("failing_since").is_none());
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn after_a_rotation_both_secrets_sign_and_a_delivery_can_be_sent_again_by_hand() {
    let receiver = Receiver::start(vec![Answer::Status(200)]);
    let app = app_for(&[&receiver], &[]).await;
    let (hook, old) = register(&app, 10, &receiver.url).await;
    let rotated: Value = call(
        &app,
        10,
        reqwest::Method::POST,
        &format!("/webhooks/{hook}/rotate"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let new = Secret::parse(rotated["secret"].as_str().unwrap()).unwrap();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_valid_until"].is_string());
    welcome(&app, 10).await;

    let delivery = delivery_in(&app, 10, hook, "delivered").await;
    let hit = receiver.hits().pop().unwrap();
    assert_eq!(hit.header("webhook-signature").split(' ').count(), 2);
    assert!(verified(&old, &hit), "the old secret still verifies");
    assert!(verified(&new, &hit), "the new one too");

    let id = delivery["id"].as_str().unwrap();
    let res = call(
        &app,
        10,
        reqwest::Method::POST,
        &format!("/webhooks/{hook}/deliveries/{id}/resend"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    eventually(WAIT, "the re-sent delivery arrives", || async {
        receiver.hits().len() == 2
    })
    .await;
    let hits = receiver.hits();
    assert_eq!(hits[1].header("webhook-id"), id, "a re-send keeps its id");
    let again = delivery_in(&app, 10, hook, "delivered").await;
    assert_eq!(again["attempts"].as_array().unwrap().len(), 2);
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn webhook_urls_that_are_not_https_or_reach_inside_are_refused() {
    let app = spawn_app(&[], &Shared::default(), None).await;
    let long = format!("https://example.com/{}", "a".repeat(3000));
    for url in [
        "not a url",
        "ftp://example.com/hook",
        "http://example.com/hook",
        "https://user:pw@example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.5/hook",
        "https://[::ffff:192.168.0.1]/hook",
        "https://no-such-host.invalid/hook",
        &long,
    ] {
        let res = call(
            &app,
            11,
            reqwest::Method::POST,
            "/webhooks",
            Some(json!({ "url": url })),
        )
        .await;
        let problem = test_support::http::problem(res, 422, "invalid_field").await;
        assert!(
            !problem.detail.contains("127.0.0.1") && !problem.detail.contains("10.0.0.5"),
            "the address is not echoed: {}",
            problem.detail
        );
    }
    for body in [
        json!({}),
        json!({ "url": 5 }),
        json!({ "url": "https://example.com", "x": 1 }),
    ] {
        let res = call(&app, 11, reqwest::Method::POST, "/webhooks", Some(body)).await;
        test_support::http::problem(res, 400, "invalid_json").await;
    }
    let list: Value = get(&app, 11, "/webhooks").await;
    assert_eq!(list["webhooks"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_its_target_gets_nothing() {
    let inside = Receiver::start(vec![Answer::Status(200)]);
    let redirecting = Receiver::start(vec![Answer::Redirect(inside.url.clone())]);
    let app = app_for(
        &[&redirecting, &inside],
        &[("NOTIFICATIONS_WEBHOOK_MAX_ATTEMPTS", "2")],
    )
    .await;
    let (hook, _) = register(&app, 12, &redirecting.url).await;
    welcome(&app, 12).await;
    let delivery = delivery_in(&app, 12, hook, "dead").await;
    let first = &delivery["attempts"][0];
    assert_eq!(first["status"], 302);
    assert_eq!(first["error"], "redirects are not followed");
    assert!(
        inside.hits().is_empty(),
        "the redirect's target got nothing"
    );
    app.stop().await;
    inside.stop().await;
    redirecting.stop().await;
}

#[tokio::test]
async fn another_users_webhook_is_not_found_and_a_user_has_a_bounded_number() {
    let app = spawn_app(
        &[("NOTIFICATIONS_WEBHOOK_MAX_PER_USER", "2")],
        &Shared::default(),
        None,
    )
    .await;
    let (hook, _) = register(&app, 13, "https://1.1.1.1/hook").await;
    for (method, path) in [
        (reqwest::Method::GET, format!("/webhooks/{hook}")),
        (reqwest::Method::DELETE, format!("/webhooks/{hook}")),
        (reqwest::Method::POST, format!("/webhooks/{hook}/rotate")),
        (reqwest::Method::POST, format!("/webhooks/{hook}/enable")),
        (reqwest::Method::GET, format!("/webhooks/{hook}/deliveries")),
        (
            reqwest::Method::POST,
            format!("/webhooks/{hook}/deliveries/msg_x/resend"),
        ),
    ] {
        let res = call(&app, 14, method.clone(), &path, None).await;
        test_support::http::problem(res, 404, "not_found").await;
    }
    register(&app, 13, "https://1.0.0.1/hook").await;
    let res = call(
        &app,
        13,
        reqwest::Method::POST,
        "/webhooks",
        Some(json!({ "url": "https://8.8.8.8/hook" })),
    )
    .await;
    test_support::http::problem(res, 409, "too_many_webhooks").await;
    let res = call(&app, 13, reqwest::Method::GET, "/webhooks/x", None).await;
    test_support::http::problem(res, 400, "invalid_field").await;
    app.stop().await;
}

#[tokio::test]
async fn a_muted_topic_stores_nothing_and_a_digested_one_arrives_as_one_summary() {
    // Once a minute, a few seconds from now: both digested comments are
    // held by then, so they arrive in one summary. A schedule firing every
    // second could run between the two and split them.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .wrapping_add(4)
        % 60;
    let schedule = format!("{second} * * * * *");
    let app = spawn_app(
        &[("NOTIFICATIONS_DIGEST_SCHEDULE", schedule.as_str())],
        &Shared::default(),
        None,
    )
    .await;
    let set = |mode: &'static str| {
        let app = &app;
        async move {
            let res = call(
                app,
                1,
                reqwest::Method::PUT,
                "/preferences/comment",
                Some(json!({ "mode": mode })),
            )
            .await;
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<Value>().await.unwrap()
        }
    };
    let posts = |id: &str, kind: &str, data: Value| {
        let event = post_event(id, kind, data);
        let bus = app.bus.clone();
        async move { bus.publish("posts.events", &event).await.unwrap() }
    };
    assert_eq!(set("muted").await["topics"]["comment"], "muted");
    posts(
        "p1",
        "PostCreated",
        json!({ "id": 100, "title": "Hello", "author_id": 1 }),
    )
    .await;
    posts(
        "c1",
        "CommentAdded",
        json!({ "post_id": 100, "author_id": 2, "content": "first" }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    set("digest").await;
    for (id, content) in [("c2", "second"), ("c3", "third")] {
        posts(
            id,
            "CommentAdded",
            json!({ "post_id": 100, "author_id": 2, "content": content }),
        )
        .await;
    }
    // A slow start past the chosen second waits for the next minute.
    let digest_wait = Duration::from_secs(70);
    let list = test_support::eventually_some(digest_wait, "the digest arrives", || async {
        let list: Value = get(&app, 1, "").await;
        (!list["notifications"].as_array().unwrap().is_empty()).then_some(list)
    })
    .await;
    let notifications = list["notifications"].as_array().unwrap();
    assert_eq!(
        notifications.len(),
        1,
        "one summary, the muted one never: {list}"
    );
    let digest = &notifications[0];
    assert_eq!(digest["topic"], "digest");
    assert_eq!(digest["title"], "Your daily digest: 2 notifications");
    assert!(
        digest["message"]
            .as_str()
            .unwrap()
            .starts_with("2 comments."),
        "{digest}"
    );
    // Back to instant: the next comment arrives on its own.
    assert_eq!(set("instant").await["topics"]["comment"], "instant");
    posts(
        "c4",
        "CommentAdded",
        json!({ "post_id": 100, "author_id": 2, "content": "fourth" }),
    )
    .await;
    eventually(WAIT, "the comment arrives at once", || async {
        let list: Value = get(&app, 1, "").await;
        list["notifications"].as_array().unwrap().len() == 2
    })
    .await;

    for (path, body, status) in [
        ("/preferences/welcome", json!({ "mode": "muted" }), 400),
        ("/preferences/comment", json!({ "mode": "loud" }), 400),
    ] {
        let res = call(&app, 1, reqwest::Method::PUT, path, Some(body)).await;
        assert_eq!(res.status().as_u16(), status, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_user_loses_their_preferences_and_webhooks() {
    let app = spawn_app(&[], &Shared::default(), None).await;
    register(&app, 15, "https://1.1.1.1/hook").await;
    let res = call(
        &app,
        15,
        reqwest::Method::PUT,
        "/preferences/mention",
        Some(json!({ "mode": "muted" })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let deleted = CloudEvent {
        event_type: "UserDeleted".into(),
        data: json!({ "id": 15 }).to_string().into_bytes(),
        ..user_created("gone-15", 15, "x")
    };
    app.bus.publish("users.events", &deleted).await.unwrap();
    eventually(WAIT, "the webhooks are gone", || async {
        let list: Value = get(&app, 15, "/webhooks").await;
        list["webhooks"] == json!([])
    })
    .await;
    let preferences: Value = get(&app, 15, "/preferences").await;
    assert_eq!(
        preferences["topics"],
        json!({ "comment": "instant", "mention": "instant", "file": "instant" })
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_made_while_the_broker_is_down_all_arrive_once_it_is_back() {
    let mut broker = test_support::PrivateRabbit::start();
    let receiver = Receiver::start(vec![Answer::Status(204)]);
    let url = broker.url();
    let app = app_for(
        &[&receiver],
        &[
            ("NOTIFICATIONS_JOBS_URL", url.as_str()),
            ("NOTIFICATIONS_JOBS_PUBLISH_TIMEOUT", "1s"),
            ("NOTIFICATIONS_JOBS_CONNECT_TIMEOUT", "1s"),
        ],
    )
    .await;
    let (hook, _) = register(&app, 16, &receiver.url).await;
    welcome(&app, 16).await;
    delivery_in(&app, 16, hook, "delivered").await;

    broker.stop();
    for n in 0..5 {
        app.bus
            .publish(
                "users.events",
                &user_created(&format!("outage-{n}"), 16, "ada"),
            )
            .await
            .unwrap();
    }
    // Stored and in the outbox; nothing can be queued yet.
    eventually(WAIT, "the notifications are stored", || async {
        deliveries(&app, 16, hook).await.len() == 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart();

    eventually(
        Duration::from_secs(30),
        "every delivery arrives",
        || async {
            deliveries(&app, 16, hook)
                .await
                .iter()
                .all(|d| d["state"] == "delivered")
        },
    )
    .await;
    let ids: BTreeSet<String> = receiver
        .hits()
        .iter()
        .map(|h| h.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids.len(), 6, "every delivery arrived");
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_receiver_answering_410_gone_is_disabled_at_once_and_its_owner_told() {
    let receiver = Receiver::start(vec![Answer::Status(410)]);
    let app = app_for(&[&receiver], &[]).await;
    let (hook, _) = register(&app, 17, &receiver.url).await;
    welcome(&app, 17).await;
    let delivery = delivery_in(&app, 17, hook, "dead").await;
    assert_eq!(
        delivery["attempts"].as_array().unwrap().len(),
        1,
        "no retry"
    );
    let state: Value = get(&app, 17, &format!("/webhooks/{hook}")).await;
    assert_eq!(state["enabled"], false);
    let list: Value = get(&app, 17, "").await;
    assert!(
        list["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["message"].as_str().unwrap().contains("answered 410 Gone")),
        "{list}"
    );
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn concurrent_registrations_on_postgres_stay_within_the_per_user_limit() {
    let url = test_support::backends::fresh_postgres_url("notifications_webhooks").await;
    let app = spawn_app(
        &[
            ("NOTIFICATIONS_DATABASE_URL", url.as_str()),
            ("NOTIFICATIONS_WEBHOOK_MAX_PER_USER", "3"),
        ],
        &Shared::default(),
        None,
    )
    .await;
    let mut creates = tokio::task::JoinSet::new();
    for n in 0..10 {
        let (base, token) = (app.base.clone(), token(18));
        creates.spawn(async move {
            client()
                .post(format!("{base}/api/v1/notifications/webhooks"))
                .bearer_auth(token)
                .json(&json!({ "url": format!("https://1.1.1.1/hook/{n}") }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = creates.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 201, 201, 409, 409, 409, 409, 409, 409, 409]);
    let list: Value = get(&app, 18, "/webhooks").await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 3);
    app.stop().await;
}
