//! Search end to end: posts and users written through the gateway are
//! found through it, by the search service reading the users service's
//! events; a reindex rebuilds from the event log without losing what is
//! written meanwhile; bad queries get clear 400s.

#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::time::Duration;

use e2e::in_process::{Platform, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{eventually, eventually_some};

const WAIT: Duration = Duration::from_secs(15);

async fn search(platform: &Platform, query: &str) -> Value {
    let res = platform
        .client
        .get(format!("{}/api/v1/search?{query}", platform.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{query}");
    res.json().await.unwrap()
}

async fn create_post(platform: &Platform, token: &str, title: &str, content: &str) -> u64 {
    let res = platform
        .client
        .post(format!("{}/api/v1/posts", platform.base))
        .bearer_auth(token)
        .json(&json!({ "title": title, "content": content }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["id"].as_u64().unwrap()
}

fn hit_ids(page: &Value) -> Vec<String> {
    page["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_post_written_through_the_gateway_is_found_and_once_deleted_is_gone() {
    let platform = Platform::start().await;
    let search_app = platform.start_search(&[]).await;
    let user = platform.sign_up("searcher").await;
    let token = platform.login("searcher").await;
    let id = create_post(&platform, &token, "Tantivy inside", "A #rust search engine").await;
    let key = format!("post:{id}");
    let page = eventually_some(WAIT, "the post is searchable", || async {
        let page = search(&platform, "q=tantvy").await;
        (page["total"] == 1).then_some(page)
    })
    .await;
    let hit = &page["hits"][0];
    assert_eq!(hit["id"], key.as_str());
    assert_eq!(hit["author_id"], user["id"]);
    assert_eq!(hit["tags"], json!(["rust"]));
    assert_eq!(hit["highlights"]["title"], "<mark>Tantivy</mark> inside");
    assert_eq!(
        page["facets"]["tags"],
        json!([{ "value": "rust", "count": 1 }])
    );
    assert!(page["took_ms"].is_u64() && page["next_cursor"].is_null());

    // The user is found by username, and their email is never indexed.
    let users = search(&platform, "q=searcher&kind=user").await;
    assert_eq!(hit_ids(&users), [format!("user:{}", user["id"])]);
    assert_eq!(users["hits"][0]["author_id"], Value::Null);
    let by_email = search(&platform, "q=searcher%40example.com").await;
    assert!(!by_email.to_string().contains("example.com"), "{by_email}");
    let email_only = search(&platform, "q=example.com&kind=user").await;
    assert_eq!(email_only["total"], 0, "{email_only}");

    let suggest: Value = platform
        .client
        .get(format!("{}/api/v1/search/suggest?q=tant", platform.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(suggest, json!({ "suggestions": ["Tantivy inside"] }));

    let res = platform
        .client
        .delete(format!("{}/api/v1/posts/{id}", platform.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    eventually(WAIT, "the deleted post is gone", || async {
        search(&platform, "q=tantivy").await["total"] == 0
    })
    .await;
    search_app.stop().await;
    platform.stop().await;
}

#[tokio::test]
async fn bad_queries_are_clear_400s_never_a_backend_error() {
    let platform = Platform::start().await;
    let search_app = platform.start_search(&[]).await;
    let long = "a".repeat(10_000);
    // A forged cursor (995 hits deep, unsigned): not one this API issued.
    let deep = e2e::in_process::base64_url(
        r#"{"s":"x","d":995,"k":{"score":1.0,"created_at_ms":0,"key":"post:1"}}"#,
    );
    let cases: Vec<(String, &str)> = vec![
        (format!("q=x&size=10&cursor={deep}"), "invalid_field"),
        ("q=".into(), "invalid_field"),
        ("q=%20%20".into(), "invalid_field"),
        ("q=()%3A*%22".into(), "invalid_field"),
        (format!("q={long}"), "invalid_field"),
        ("q=a+b+c+d+e+f+g+h+i+j+k".into(), "invalid_field"),
        ("q=x&size=101".into(), "invalid_query"),
        ("q=x&size=0".into(), "invalid_query"),
        ("q=x&kind=comment".into(), "invalid_field"),
        ("q=x&from=yesterday".into(), "invalid_field"),
        ("q=x&from=2026-12-02&to=2026-12-01".into(), "invalid_field"),
        ("q=x&to=2026-13-45".into(), "invalid_field"),
        ("q=x&cursor=not-a-cursor".into(), "invalid_field"),
        ("q=x&colour=red".into(), "invalid_query"),
        ("size=5".into(), "invalid_query"),
    ];
    for (query, code) in cases {
        let res = platform
            .client
            .get(format!("{}/api/v1/search?{query}", platform.base))
            .send()
            .await
            .unwrap();
        let body = problem(res, StatusCode::BAD_REQUEST, code).await;
        let text = body.to_string();
        assert!(
            !text.contains("tantivy") && !text.contains("Tantivy"),
            "{query}: {text}"
        );
    }
    // Query syntax is only words: these search, they do not fail.
    for query in ["q=title%3Arust+AND+(x", "q=%5C%5Cx%22*%3F~"] {
        let res = platform
            .client
            .get(format!("{}/api/v1/search?{query}", platform.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{query}");
    }
    search_app.stop().await;
    platform.stop().await;
}

#[tokio::test]
async fn a_reindex_while_posts_are_written_loses_none_of_them() {
    let platform = Platform::start().await;
    let search_app = platform.start_search(&[]).await;
    platform.sign_up("writer").await;
    let token = platform.login("writer").await;
    for i in 0..20 {
        create_post(&platform, &token, &format!("before {i}"), "reindexed").await;
    }
    eventually(WAIT, "the first posts are searchable", || async {
        search(&platform, "q=reindexed").await["total"] == 20
    })
    .await;
    let admin = search_app.host.admin_url();
    let writing = {
        let client = platform.client.clone();
        let base = platform.base.clone();
        let token = token.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                let res = client
                    .post(format!("{base}/api/v1/posts"))
                    .bearer_auth(&token)
                    .json(&json!({ "title": format!("during {i}"), "content": "reindexed" }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::CREATED);
            }
        })
    };
    let res = platform
        .client
        .post(format!("{admin}/admin/search/reindex"))
        .bearer_auth(search::test_util::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let job = res.json::<Value>().await.unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    writing.await.unwrap();
    eventually(WAIT, "the reindex succeeds", || async {
        let job: Value = platform
            .client
            .get(format!("{admin}/admin/jobs/{job}"))
            .bearer_auth(search::test_util::ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_ne!(job["state"], "dead", "{job}");
        job["state"] == "succeeded"
    })
    .await;
    eventually(WAIT, "every post is searchable", || async {
        search(&platform, "q=reindexed&size=100").await["total"] == 50
    })
    .await;
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("search_reindex_runs_total{outcome=\"published\"} 1"),
        "{metrics}"
    );
    search_app.stop().await;
    platform.stop().await;
}

#[tokio::test]
async fn two_replicas_asked_to_reindex_at_once_run_it_once() {
    let platform = Platform::start().await;
    // The replicas share their job records and the lock, as deployed.
    let database = test_support::backends::fresh_postgres_url("search").await;
    let redis = test_support::backends::redis_url();
    let vars = [
        ("SEARCH_DATABASE_URL", database.as_str()),
        ("SEARCH_REDIS_URL", redis.as_str()),
    ];
    let first = platform.start_search(&vars).await;
    let second = platform.start_search(&vars).await;
    let ask = |admin: String| {
        let client = platform.client.clone();
        async move {
            client
                .post(format!("{admin}/admin/search/reindex"))
                .bearer_auth(search::test_util::ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
        }
    };
    let (a, b) = tokio::join!(ask(first.host.admin_url()), ask(second.host.admin_url()));
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::ACCEPTED, StatusCode::CONFLICT]);
    let conflict = if a.status() == StatusCode::CONFLICT {
        a
    } else {
        b
    };
    problem(conflict, StatusCode::CONFLICT, "reindex_running").await;
    // Without the token the route is refused.
    let res = platform
        .client
        .post(format!("{}/admin/search/reindex", first.host.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    first.stop().await;
    second.stop().await;
    platform.stop().await;
}
