//! The service as its callers see it: events in, gRPC searches out.

use std::time::Duration;

use common::auth::ServiceAuthConfig;
use common::events::{CloudEvent, EventBus};
use common::service::Shared;
use platform_proto::search::v1::search_service_client::SearchServiceClient;
use platform_proto::search::v1::{SearchRequest, SearchResponse, SuggestRequest};
use search::test_util::{TestApp, spawn_app};
use test_support::eventually_some;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const WAIT: Duration = Duration::from_secs(10);

type Client = SearchServiceClient<InterceptedService<Channel, common::auth::ServiceInterceptor>>;

async fn client(app: &TestApp, caller: &str) -> Client {
    let timeouts = common::clients::Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(30),
    };
    let channel = common::clients::grpc_endpoint(app.host.grpc_url(), timeouts)
        .expect("a valid URL")
        .connect()
        .await
        .expect("the gRPC port accepts connections");
    let credentials = ServiceAuthConfig::process_default(caller).credentials();
    SearchServiceClient::with_interceptor(channel, credentials.interceptor("search"))
}

fn event(id: &str, event_type: &str, version: u64, data: serde_json::Value) -> CloudEvent {
    CloudEvent {
        id: id.to_owned(),
        source: "/users".into(),
        event_type: event_type.into(),
        subject: data["id"].to_string(),
        time: "2026-12-06T12:00:00Z".into(),
        aggregate_version: version,
        schema_version: 1,
        traceparent: None,
        data: data.to_string().into_bytes(),
    }
}

fn request(query: &str) -> SearchRequest {
    SearchRequest {
        query: query.into(),
        ..SearchRequest::default()
    }
}

async fn searched(client: &mut Client, query: &str, total: u64) -> SearchResponse {
    eventually_some(WAIT, &format!("{total} hits for {query:?}"), || {
        let mut client = client.clone();
        async move {
            let found = client
                .search(request(query))
                .await
                .expect("the search runs")
                .into_inner();
            (found.total == total).then_some(found)
        }
    })
    .await
}

#[tokio::test]
async fn events_become_searchable_once_however_often_they_arrive() {
    let app = spawn_app(&[], &Shared::default(), None).await;
    let mut client = client(&app, "gateway").await;
    let created = event(
        "e1",
        "PostCreated",
        1,
        serde_json::json!({ "id": 5, "title": "Hello #world", "content": "first post", "author_id": 2 }),
    );
    let user = event(
        "e2",
        "UserCreated",
        1,
        serde_json::json!({ "id": 2, "username": "writer", "email": "writer@example.com" }),
    );
    app.bus.publish("posts.events", &created).await.unwrap();
    app.bus.publish("users.events", &user).await.unwrap();
    // Redelivered, and a comment, which is not indexed.
    app.bus.publish("posts.events", &created).await.unwrap();
    let comment = event(
        "e3",
        "CommentAdded",
        1,
        serde_json::json!({ "id": 9, "post_id": 5, "author_id": 2, "content": "hello" }),
    );
    app.bus.publish("posts.events", &comment).await.unwrap();
    let found = searched(&mut client, "hello", 1).await;
    assert_eq!(found.hits[0].id, "post:5");
    assert_eq!(found.hits[0].tags, ["world"]);
    assert_eq!(found.hits[0].created_at, "2026-12-06T12:00:00.000Z");
    let users = searched(&mut client, "writer", 1).await;
    assert!(
        users
            .hits
            .iter()
            .all(|h| !format!("{h:?}").contains("example.com")),
        "{users:?}"
    );

    let updated = event(
        "e4",
        "PostUpdated",
        2,
        serde_json::json!({ "id": 5, "title": "Goodbye", "content": "edited", "author_id": 2 }),
    );
    app.bus.publish("posts.events", &updated).await.unwrap();
    searched(&mut client, "goodbye", 1).await;
    // The older version, late: changes nothing.
    app.bus.publish("posts.events", &created).await.unwrap();
    let deleted = event("e5", "UserDeleted", 3, serde_json::json!({ "id": 2 }));
    app.bus.publish("users.events", &deleted).await.unwrap();
    searched(&mut client, "goodbye writer", 0).await;
    assert_eq!(
        client
            .search(request("hello"))
            .await
            .unwrap()
            .into_inner()
            .total,
        0
    );

    let suggestions = client
        .suggest(SuggestRequest {
            query: "goo".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(suggestions.suggestions.is_empty());
    let metrics = reqwest::get(format!("{}/metrics", app.host.admin_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "search_events_skipped_total{reason=\"not_indexed\"} 1",
        "search_query_duration_seconds_count{op=\"search\",outcome=\"ok\"}",
        "search_index_lag_seconds_count",
        "search_documents_indexed_total{source=\"events\"}",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_request_the_service_will_not_run_names_its_field() {
    let app = spawn_app(&[], &Shared::default(), None).await;
    let mut client = client(&app, "gateway").await;
    let cases = [
        (request(""), "q"),
        (request(&"x".repeat(10_240)), "q"),
        (
            SearchRequest {
                kind: "comment".into(),
                ..request("x")
            },
            "kind",
        ),
        (
            SearchRequest {
                created_from: "2026-02-30".into(),
                ..request("x")
            },
            "from",
        ),
        (
            SearchRequest {
                size: 1000,
                ..request("x")
            },
            "size",
        ),
        (
            SearchRequest {
                cursor: "eyJzIjoieCJ9".into(),
                ..request("x")
            },
            "cursor",
        ),
    ];
    for (req, field) in cases {
        let status = client.search(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, field);
    }
    app.stop().await;
}

#[tokio::test]
async fn only_the_gateway_and_operators_may_search() {
    let app = spawn_app(&[], &Shared::default(), None).await;
    for (caller, code) in [
        ("gateway", Code::Ok),
        ("admin", Code::Ok),
        ("notifications", Code::PermissionDenied),
    ] {
        let mut client = client(&app, caller).await;
        let answer = client.search(request("x")).await;
        assert_eq!(
            answer.err().map_or(Code::Ok, |s| s.code()),
            code,
            "{caller}"
        );
    }
    app.stop().await;
}
