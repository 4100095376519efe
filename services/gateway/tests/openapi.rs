//! The OpenAPI document stays in sync with the code: it matches the
//! committed `openapi.json` (regenerate with `UPDATE_OPENAPI=1 cargo test -p
//! gateway --test openapi`), and every operation it documents is routed.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // test clients of servers the test starts

use common::service::Shared;
use serde_json::Value;
use test_support::http::FetchJson;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

#[test]
fn the_document_matches_the_committed_openapi_json() {
    let generated = gateway::openapi::document();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "services/gateway/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p gateway --test openapi"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_the_document_is_served() {
    // Without upstreams every route answers 503 or 401: what matters is
    // that none answers "no route".
    let p = gateway::test_util::spawn_app(&[], &Shared::default()).await;
    let client = reqwest::Client::new();
    let served: Value = client
        .get(format!("{}/openapi.json", p.base))
        .fetch_json()
        .await;
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
    let paths = served["paths"].as_object().unwrap();
    assert!(paths.len() >= 11, "{}", paths.len());
    let mut checked = 0;
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let url = format!("{}{}", p.base, path.replace("{id}", "1"));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = client
                .request(method.clone(), &url)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            let unrouted = body["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("no route for"));
            assert!(
                !unrouted,
                "{method} {path} is documented but not routed ({status})"
            );
            checked += 1;
        }
    }
    assert!(checked >= 19, "{checked}");
    p.stop().await;
}
