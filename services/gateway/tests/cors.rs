//! CORS: listed origins only, preflights answered, credentials only for
//! listed origins, the headers browser clients must read exposed.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // test clients of servers the test starts

use common::service::Shared;
use gateway::test_util::spawn_app;
use reqwest::{Method, StatusCode};
use test_support::http::problem;

const APP: &str = "https://app.example.com";

async fn preflight(base: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, format!("{base}/api/v1/users"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

async fn get(base: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/users"))
        .header("origin", origin)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_listed_origin_gets_its_preflight_answered_and_may_read_answers_with_credentials() {
    let p = spawn_app(&[("GATEWAY_CORS_ORIGINS", APP)], &Shared::default()).await;
    let res = preflight(&p.base, APP).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    assert_eq!(h["vary"], "Origin");
    assert!(
        !h.contains_key("x-ratelimit-limit"),
        "preflights are not charged"
    );

    // No users service here: the answer is a 503, still readable by the app.
    let res = get(&p.base, APP).await;
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    assert_eq!(h["access-control-allow-credentials"], "true");
    let exposed = h["access-control-expose-headers"].to_str().unwrap();
    for name in [
        "location",
        "retry-after",
        "x-ratelimit-remaining",
        "ratelimit-reset",
        "x-request-id",
    ] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    p.stop().await;
}

#[tokio::test]
async fn an_unlisted_origin_gets_no_cors_headers_and_its_preflight_is_refused() {
    let p = spawn_app(&[("GATEWAY_CORS_ORIGINS", APP)], &Shared::default()).await;
    let evil = "https://evil.example";
    let res = preflight(&p.base, evil).await;
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    problem(res, 403, "cors_origin_forbidden").await;
    let res = get(&p.base, evil).await;
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    assert!(
        !res.headers()
            .contains_key("access-control-allow-credentials")
    );
    // A look-alike is another origin.
    let res = get(&p.base, "https://app.example.com.evil.example").await;
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    p.stop().await;
}

#[tokio::test]
async fn no_origin_is_allowed_by_default() {
    let p = spawn_app(&[], &Shared::default()).await;
    let res = preflight(&p.base, APP).await;
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    problem(res, 403, "cors_origin_forbidden").await;
    p.stop().await;
}
