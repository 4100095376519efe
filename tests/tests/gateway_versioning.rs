//! API versions by path and by `Accept`, and v1's deprecation headers.

#![allow(clippy::unwrap_used)]

use e2e::in_process::{Platform, problem};
use reqwest::StatusCode;
use serde_json::Value;
use test_support::http::FetchJson;

const V2: &str = "application/vnd.platform.v2+json";

#[tokio::test]
async fn v2_pages_with_cursors_inside_an_envelope() {
    let p = Platform::start().await;
    for name in ["ann", "bob", "cat", "dan", "eve"] {
        p.sign_up(name).await;
    }
    let mut names = Vec::new();
    let mut url = format!("{}/api/v2/users?limit=2", p.base);
    let mut pages = 0;
    loop {
        let res = p.client.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(!res.headers().contains_key("deprecation"), "v2 is current");
        let body: Value = res.json().await.unwrap();
        pages += 1;
        for user in body["data"].as_array().unwrap() {
            names.push(user["username"].as_str().unwrap().to_owned());
        }
        match body.get("next_cursor").and_then(Value::as_str) {
            Some(cursor) => url = format!("{}/api/v2/users?limit=2&cursor={cursor}", p.base),
            None => break,
        }
    }
    assert_eq!(names, ["ann", "bob", "cat", "dan", "eve"]);
    assert_eq!(pages, 3);

    let one: Value = p
        .client
        .get(format!("{}/api/v2/users/1", p.base))
        .fetch_json()
        .await;
    assert_eq!(one["data"]["username"], "ann");
    let bad = p
        .client
        .get(format!("{}/api/v2/users?cursor=bm9wZQ", p.base))
        .send()
        .await
        .unwrap();
    problem(bad, StatusCode::BAD_REQUEST, "invalid_cursor").await;
    p.stop().await;
}

#[tokio::test]
async fn v1_answers_carry_deprecation_sunset_and_successor() {
    let p = Platform::start().await;
    p.sign_up("ann").await;
    let res = p
        .client
        .get(format!("{}/api/v1/users/1", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["deprecation"], "@1795910400");
    assert_eq!(res.headers()["sunset"], "Tue, 30 Nov 2027 00:00:00 GMT");
    assert_eq!(
        res.headers()["link"],
        "</api/v2>; rel=\"successor-version\""
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["username"], "ann", "v1 bodies are bare, not enveloped");
    p.stop().await;
}

#[tokio::test]
async fn unversioned_paths_follow_the_accept_header() {
    let p = Platform::start().await;
    p.sign_up("ann").await;
    let v2: Value = p
        .client
        .get(format!("{}/api/users/1", p.base))
        .header("accept", V2)
        .fetch_json()
        .await;
    assert_eq!(v2["data"]["username"], "ann");

    let v1 = p
        .client
        .get(format!("{}/api/users/1", p.base))
        .send()
        .await
        .unwrap();
    assert!(
        v1.headers().contains_key("deprecation"),
        "no Accept version means v1"
    );
    assert_eq!(v1.json::<Value>().await.unwrap()["username"], "ann");

    let list: Value = p
        .client
        .get(format!("{}/api/users?limit=1", p.base))
        .header("accept", format!("text/html, {V2};q=0.9"))
        .fetch_json()
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    let unknown = p
        .client
        .get(format!("{}/api/users/1", p.base))
        .header("accept", "application/vnd.platform.v9+json")
        .send()
        .await
        .unwrap();
    problem(unknown, StatusCode::NOT_ACCEPTABLE, "unsupported_version").await;
    let v3 = p
        .client
        .get(format!("{}/api/v3/users/1", p.base))
        .send()
        .await
        .unwrap();
    problem(v3, StatusCode::NOT_FOUND, "unsupported_version").await;
    p.stop().await;
}

/// Follows `next_cursor` from `first` to the end; returns every item's
/// `field` and how many pages it took.
async fn all_pages(p: &Platform, first: &str, field: &str) -> (Vec<String>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut url = format!("{}{first}", p.base);
    loop {
        let body: Value = p.client.get(&url).fetch_json().await;
        pages += 1;
        for item in body["data"].as_array().unwrap() {
            items.push(item[field].as_str().unwrap().to_owned());
        }
        match body.get("next_cursor").and_then(Value::as_str) {
            Some(cursor) => url = format!("{}{first}&cursor={cursor}", p.base),
            None => return (items, pages),
        }
    }
}

#[tokio::test]
async fn v2_pages_posts_and_comments_with_cursors_of_their_own_kind() {
    let p = Platform::start().await;
    let ann = p.sign_up("ann").await;
    let token = p.login("ann").await;
    let mut post_ids = Vec::new();
    for i in 0..5 {
        let post: Value = p
            .client
            .post(format!("{}/api/v1/posts", p.base))
            .bearer_auth(&token)
            .json(&serde_json::json!({"title": format!("post {i}"), "content": "body"}))
            .fetch_json()
            .await;
        post_ids.push(post["id"].as_u64().unwrap());
    }
    for i in 0..3 {
        let res = p
            .client
            .post(format!("{}/api/v1/posts/{}/comments", p.base, post_ids[0]))
            .bearer_auth(&token)
            .json(&serde_json::json!({"content": format!("comment {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let user = ann["id"].as_u64().unwrap();

    let (titles, pages) =
        all_pages(&p, &format!("/api/v2/users/{user}/posts?limit=2"), "title").await;
    assert_eq!(titles, ["post 0", "post 1", "post 2", "post 3", "post 4"]);
    assert_eq!(pages, 3);
    let (on_post, _) = all_pages(
        &p,
        &format!("/api/v2/posts/{}/comments?limit=2", post_ids[0]),
        "content",
    )
    .await;
    assert_eq!(on_post, ["comment 0", "comment 1", "comment 2"]);
    let (by_user, _) = all_pages(
        &p,
        &format!("/api/v2/users/{user}/comments?limit=2"),
        "content",
    )
    .await;
    assert_eq!(by_user, on_post);

    let one: Value = p
        .client
        .get(format!("{}/api/v2/posts/{}", p.base, post_ids[1]))
        .fetch_json()
        .await;
    assert_eq!(one["data"]["title"], "post 1");
    let page: Value = p
        .client
        .get(format!("{}/api/v2/users/{user}/posts?limit=1", p.base))
        .fetch_json()
        .await;
    let posts_cursor = page["next_cursor"].as_str().unwrap();
    let misused = p
        .client
        .get(format!(
            "{}/api/v2/posts/{}/comments?cursor={posts_cursor}",
            p.base, post_ids[0]
        ))
        .send()
        .await
        .unwrap();
    problem(misused, StatusCode::BAD_REQUEST, "invalid_cursor").await;
    p.stop().await;
}
