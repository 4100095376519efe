//! A wrong method on a known path is a 405 that says which methods work.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // test clients of servers the test starts

use common::service::Shared;
use gateway::test_util::spawn_app;
use reqwest::Method;
use test_support::http::problem;

#[tokio::test]
async fn a_wrong_method_on_a_known_path_is_405_with_allow() {
    let p = spawn_app(&[], &Shared::default()).await;
    let client = reqwest::Client::new();
    for (method, path, allow) in [
        (Method::PUT, "/api/v1/users", "GET, POST"),
        (Method::POST, "/api/v1/users/1", "GET, PATCH, DELETE"),
        (Method::GET, "/api/v1/auth/login", "POST"),
        (Method::DELETE, "/api/v1/posts/1/comments", "GET, POST"),
    ] {
        let res = client
            .request(method.clone(), format!("{}{path}", p.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        problem(res, 405, "method_not_allowed").await;
    }
    // Every documented path, every method it does not document.
    let document: serde_json::Value = serde_json::from_str(&gateway::openapi::document()).unwrap();
    let all = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    let mut checked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        let documented: std::collections::BTreeSet<String> = operations
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        let url = format!(
            "{}{}",
            p.base,
            path.replace("{id}", "1").replace("{room}", "lobby")
        );
        for method in all.iter().filter(|m| !documented.contains(**m)) {
            let res = client
                .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .send()
                .await
                .unwrap();
            let allow: std::collections::BTreeSet<String> = res
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{method} {path}: no Allow ({})", res.status()))
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            assert_eq!(allow, documented, "{method} {path}");
            problem(res, 405, "method_not_allowed").await;
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
    let unknown = client
        .get(format!("{}/api/v1/nothing", p.base))
        .send()
        .await
        .unwrap();
    problem(unknown, 404, "not_found").await;
    p.stop().await;
}
