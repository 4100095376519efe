//! The REST API through a real gateway and a real users service on random
//! ports, sharing a static registry.

#![allow(clippy::unwrap_used)]

use std::time::Duration;
use test_support::http::FetchJson;

use e2e::in_process::{Platform, base64_url, problem};
use gateway::jwt::{TokenKeys, TokenPolicy, TokenSigner, TokenUse};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn sign_up_login_read_update_delete() {
    let p = Platform::start().await;
    let ann = p.sign_up("ann").await;
    let id = ann["id"].as_u64().unwrap();
    assert!(ann.get("password").is_none());
    let token = p.login("ANN@example.com").await;

    let got: Value = p
        .client
        .get(format!("{}/api/v1/users/{id}", p.base))
        .fetch_json()
        .await;
    assert_eq!(got["username"], "ann");

    let res = p
        .patch(
            id,
            Some(&token),
            json!({ "username": "anne", "expected_version": 1 }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let updated: Value = res.json().await.unwrap();
    assert_eq!(
        (updated["username"].as_str(), updated["version"].as_u64()),
        (Some("anne"), Some(2))
    );

    let stale = p
        .patch(
            id,
            Some(&token),
            json!({ "username": "annie", "expected_version": 1 }),
        )
        .await;
    problem(stale, StatusCode::CONFLICT, "version_conflict").await;

    p.sign_up("bob").await;
    let list: Value = p
        .client
        .get(format!("{}/api/v1/users?page=1&per_page=100", p.base))
        .fetch_json()
        .await;
    assert_eq!(
        (list["total"].as_i64(), list["per_page"].as_i64()),
        (Some(2), Some(100))
    );
    // Outside the documented bounds is refused, not quietly clamped.
    for query in ["per_page=101", "per_page=0", "page=0", "page=-1"] {
        let res = p
            .client
            .get(format!("{}/api/v1/users?{query}", p.base))
            .send()
            .await
            .unwrap();
        problem(res, StatusCode::BAD_REQUEST, "invalid_query").await;
    }

    let res = p
        .client
        .delete(format!("{}/api/v1/users/{id}", p.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let metrics = p
        .client
        .get(format!("{}/metrics", p.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("gateway_upstream_request_duration_seconds_count")
                && l.contains("upstream=\"users\"")
                && l.contains("result=\"ok\"")
        ),
        "upstream latency is recorded per upstream"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_requests_total")
                && l.contains("path=\"/api/v1/users/{id}\"")),
        "requests are counted per route template"
    );
    assert!(metrics.contains("circuit_breaker_state{upstream=\"users\",class=\"read\"}"));
    let gone = p
        .client
        .get(format!("{}/api/v1/users/{id}", p.base))
        .send()
        .await
        .unwrap();
    problem(gone, StatusCode::NOT_FOUND, "not_found").await;
    p.stop().await;
}

#[tokio::test]
async fn only_the_owner_may_change_an_account() {
    let p = Platform::start().await;
    let ann = p.sign_up("ann").await["id"].as_u64().unwrap();
    p.sign_up("bob").await;
    let bob_token = p.login("bob").await;
    let res = p
        .patch(ann, Some(&bob_token), json!({ "username": "hacked" }))
        .await;
    problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = p
        .client
        .delete(format!("{}/api/v1/users/{ann}", p.base))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    p.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401() {
    let p = Platform::start().await;
    let ann = p.sign_up("ann").await["id"].as_u64().unwrap();
    let token = p.login("ann").await;
    let (head, rest) = token.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged_claims = base64_url(&format!(
        r#"{{"iss":"platform","aud":"platform-api","sub":"{ann}","iat":{now},"nbf":{now},"exp":99999999999,"jti":"x","use":"access"}}"#
    ));
    let none_header = base64_url(r#"{"alg":"none","typ":"JWT","kid":"primary"}"#);
    let key = gateway::test_util::SIGNING_KEY.as_bytes();
    // Signed with the gateway's own key, each wrong in one way.
    let signed = |kid: &str, policy: TokenPolicy, issued_at: u64| {
        TokenSigner::new(TokenKeys::hs256(kid, key).unwrap(), policy)
            .unwrap()
            .issue_at(ann, "ann", TokenUse::Access, None, issued_at)
            .unwrap()
            .token
    };
    let default = TokenPolicy::default;
    let other_key = TokenSigner::hs256(b"another key that is long enough!!", default())
        .unwrap()
        .issue(ann, "ann", TokenUse::Access, None)
        .unwrap()
        .token;
    let refresh_as_access = TokenSigner::hs256(key, default())
        .unwrap()
        .issue(ann, "ann", TokenUse::Refresh, Some("f"))
        .unwrap()
        .token;
    let bad_tokens = [
        ("tampered claims", format!("{head}.{forged_claims}.{sig}")),
        ("alg none", format!("{none_header}.{forged_claims}.")),
        ("another key", other_key),
        ("expired", signed("primary", default(), 1_000_000)),
        ("future nbf", signed("primary", default(), now + 3600)),
        ("unknown kid", signed("2020-01", default(), now)),
        (
            "wrong issuer",
            signed(
                "primary",
                TokenPolicy {
                    issuer: "evil".into(),
                    ..default()
                },
                now,
            ),
        ),
        (
            "wrong audience",
            signed(
                "primary",
                TokenPolicy {
                    audience: "another-api".into(),
                    ..default()
                },
                now,
            ),
        ),
        ("a refresh token", refresh_as_access),
        ("garbage", "garbage".to_owned()),
    ];
    let mut bodies = std::collections::BTreeSet::new();
    for (why, bad) in bad_tokens {
        let res = p
            .patch(ann, Some(&bad), json!({ "username": "x_y_z" }))
            .await;
        assert_eq!(res.headers()["www-authenticate"], "Bearer", "{why}");
        let body = problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
        bodies.insert(body.to_string());
    }
    assert_eq!(
        bodies.len(),
        1,
        "one answer for every bad token: {bodies:?}"
    );
    let res = p.patch(ann, None, json!({ "username": "x_y_z" })).await;
    problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong = p
        .client
        .post(format!("{}/api/v1/auth/login", p.base))
        .json(&json!({ "login": "ann", "password": "not the password" }))
        .send()
        .await
        .unwrap();
    problem(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;
    p.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_problem() {
    let p = Platform::start().await;
    let url = format!("{}/api/v1/users", p.base);
    let malformed = p
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"username\":")
        .send()
        .await
        .unwrap();
    problem(malformed, StatusCode::BAD_REQUEST, "invalid_json").await;
    let text = p
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    problem(
        text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let huge =
        json!({ "username": "x".repeat(100_000), "email": "a@b.co", "password": "pppppppp" });
    let too_big = p.client.post(&url).json(&huge).send().await.unwrap();
    problem(too_big, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let unknown = json!({ "username": "ann", "email": "ann@example.com", "password": "pppppppp", "admin": true });
    problem(
        p.client.post(&url).json(&unknown).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    let bad_email = json!({ "username": "ann", "email": "nope", "password": "pppppppp" });
    let body = problem(
        p.client.post(&url).json(&bad_email).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_field",
    )
    .await;
    assert_eq!(body["field"], "email");
    // A body is an object: serde alone would read a struct from an array
    // of its fields too.
    for array in [
        "[\"ann\", \"ann@example.com\", \"pppppppp\"]",
        "[null, null]",
        "[]",
    ] {
        let res = p
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(array)
            .send()
            .await
            .unwrap();
        problem(res, StatusCode::BAD_REQUEST, "invalid_json").await;
    }
    problem(
        p.client.get(format!("{url}/abc")).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    problem(
        p.client
            .get(format!("{url}/99999999999999999999999"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    problem(
        p.client
            .get(format!("{url}?page=99999999999999"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    p.sign_up("ann").await;
    let dup = json!({ "username": "ANN", "email": "other@example.com", "password": "pppppppp" });
    let body = problem(
        p.client.post(&url).json(&dup).send().await.unwrap(),
        StatusCode::CONFLICT,
        "already_exists",
    )
    .await;
    assert_eq!(body["field"], "username");

    // Request ids: a plain one is echoed, an injection attempt is replaced.
    let res = p
        .client
        .get(format!("{url}/1"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-42");
    let res = p
        .client
        .get(format!("{url}/1"))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "a b<script>");
    p.stop().await;
}

#[tokio::test]
async fn a_dead_upstream_gets_a_fast_503_and_traffic_resumes_when_it_returns() {
    let mut p = Platform::start().await;
    let ann = p.sign_up("ann").await["id"].as_u64().unwrap();
    let url = format!("{}/api/v1/users/{ann}", p.base);
    p.users.take().unwrap().stop().await;

    for _ in 0..6 {
        let started = std::time::Instant::now();
        let res = p.client.get(&url).send().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3), "no hang");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().contains_key("retry-after"));
        problem(res, StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable").await;
    }
    // The breaker is open now: the answer comes without trying the upstream.
    let started = std::time::Instant::now();
    let res = p.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(100));

    // A new users instance (same database) registers; traffic resumes once
    // the breaker's open period ends, without restarting the gateway.
    p.restart_users().await;
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = p.client.get(&url).send().await.unwrap().status();
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
    p.stop().await;
}

#[tokio::test]
async fn an_email_is_shown_to_its_owner_only() {
    let p = Platform::start().await;
    let ann = p.sign_up("ann").await;
    assert_eq!(ann["email"], "ann@example.com", "sign-up answers its owner");
    let id = ann["id"].as_u64().unwrap();
    p.sign_up("bob").await;
    let ann_token = p.login("ann").await;
    let bob_token = p.login("bob").await;

    let get = |path: String, token: Option<String>| {
        let mut req = p.client.get(format!("{}{path}", p.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            res.json::<Value>().await.unwrap()
        }
    };
    // Nobody but its owner sees an email; bob sees his own, ann's is null.
    let others_hidden = |users: &Value, viewer: &str| {
        users
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["email"].is_null() == (u["username"] != viewer))
    };
    for (viewer, token) in [("nobody", None), ("bob", Some(bob_token.clone()))] {
        let one = get(format!("/api/v1/users/{id}"), token.clone()).await;
        assert_eq!(one["username"], "ann");
        assert_eq!(one["email"], Value::Null, "{one}");
        let list = get("/api/v1/users".into(), token.clone()).await;
        assert!(others_hidden(&list["users"], viewer), "{list}");
        let v2_one = get(format!("/api/v2/users/{id}"), token.clone()).await;
        assert_eq!(v2_one["data"]["email"], Value::Null, "{v2_one}");
        let v2_list = get("/api/v2/users".into(), token.clone()).await;
        assert!(others_hidden(&v2_list["data"], viewer), "{v2_list}");
    }

    let own = get(format!("/api/v1/users/{id}"), Some(ann_token.clone())).await;
    assert_eq!(own["email"], "ann@example.com");
    let own_list = get("/api/v2/users".into(), Some(ann_token)).await;
    let emails: Vec<&Value> = own_list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["email"])
        .collect();
    assert_eq!(emails, [&json!("ann@example.com"), &Value::Null]);

    // A bad token on a public read is refused, not read as anonymous.
    let forged = p
        .client
        .get(format!("{}/api/v1/users/{id}", p.base))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    problem(forged, StatusCode::UNAUTHORIZED, "unauthorized").await;
    p.stop().await;
}

#[tokio::test]
async fn only_the_author_may_change_a_post_or_a_comment() {
    let p = Platform::start().await;
    p.sign_up("ann").await;
    p.sign_up("bob").await;
    let (ann, bob) = (p.login("ann").await, p.login("bob").await);
    let post: Value = p
        .client
        .post(format!("{}/api/v1/posts", p.base))
        .bearer_auth(&ann)
        .json(&json!({ "title": "Ann's", "content": "mine" }))
        .fetch_json()
        .await;
    let post_url = format!("{}/api/v1/posts/{}", p.base, post["id"]);
    let comment: Value = p
        .client
        .post(format!("{post_url}/comments"))
        .bearer_auth(&ann)
        .json(&json!({ "content": "first" }))
        .fetch_json()
        .await;
    let comment_url = format!("{}/api/v1/comments/{}", p.base, comment["id"]);
    for url in [&post_url, &comment_url] {
        let body = json!({ "content": "bob's" });
        let res = p
            .client
            .patch(url)
            .bearer_auth(&bob)
            .json(&body)
            .send()
            .await
            .unwrap();
        problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = p.client.delete(url).bearer_auth(&bob).send().await.unwrap();
        problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let res = p
        .client
        .patch(&post_url)
        .bearer_auth(&ann)
        .json(&json!({ "title": "Still Ann's" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Gone, the post's comments are a 404 as well, not an empty page; so
    // are the posts of nobody.
    let res = p
        .client
        .delete(&post_url)
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for url in [
        format!("{post_url}/comments"),
        format!("{}/api/v2/posts/{}/comments", p.base, post["id"]),
        comment_url.clone(),
        format!("{}/api/v1/users/999/posts", p.base),
        format!("{}/api/v1/users/999/comments", p.base),
    ] {
        let res = p.client.get(&url).send().await.unwrap();
        problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    p.stop().await;
}
