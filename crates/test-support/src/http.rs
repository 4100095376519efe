//! Assertions on HTTP answers.

#![allow(clippy::disallowed_methods)] // test clients talk to loopback servers the test owns

use common::problem::{CONTENT_TYPE, ProblemBody};

/// Asserts that `res` is a problem body with `status` and `code`, in the
/// one shape every service answers with, and returns it.
pub async fn problem(res: reqwest::Response, status: u16, code: &str) -> ProblemBody {
    let url = res.url().clone();
    let got = res.status().as_u16();
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().await.expect("a readable body");
    assert_eq!(got, status, "status of {url}: {text}");
    assert_eq!(content_type, CONTENT_TYPE, "media type of {url}: {text}");
    let body: ProblemBody = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url} answered no problem body ({e}): {text}"));
    assert_eq!(body.code, code, "{body:?}");
    assert_eq!(body.status, status, "{body:?}");
    assert_eq!(body.kind, common::problem::type_uri(code), "{body:?}");
    body
}

/// Asserts what every service's host answers, whatever its API: live and
/// ready on the public port, metrics only on the admin listener, and a
/// problem body for a path no route matches.
pub async fn assert_host_routes(host: &crate::TestHost) {
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        async move { client.get(&url).send().await.expect("the host answers") }
    };
    let base = host.http_url();
    let admin = host.admin_url();
    for url in [
        format!("{base}/health/live"),
        format!("{base}/health/ready"),
        format!("{admin}/health/ready"),
        format!("{admin}/metrics"),
    ] {
        let res = get(url.clone()).await;
        assert_eq!(res.status().as_u16(), 200, "{} {url}", host.name());
    }
    let public_ready: serde_json::Value = get(format!("{base}/health/ready"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(public_ready, serde_json::json!({ "ready": true }));
    problem(get(format!("{base}/metrics")).await, 404, "not_found").await;
    let res = client
        .get(format!("{base}/nope"))
        .send()
        .await
        .expect("the host answers");
    let body = problem(res, 404, "not_found").await;
    assert_eq!(body.detail, "no route for GET /nope", "{}", host.name());
}

/// `request.fetch_json().await`: sends, and reads the answer as JSON,
/// panicking with the URL when either fails.
#[allow(async_fn_in_trait)] // tests only, on one runtime
pub trait FetchJson {
    async fn fetch_json<T: serde::de::DeserializeOwned>(self) -> T;
}

impl FetchJson for reqwest::RequestBuilder {
    async fn fetch_json<T: serde::de::DeserializeOwned>(self) -> T {
        let res = self.send().await.expect("the request is answered");
        let url = res.url().clone();
        res.json()
            .await
            .unwrap_or_else(|e| panic!("{url} answered no JSON: {e}"))
    }
}
