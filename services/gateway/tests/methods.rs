//! A wrong method on a known path is a 405 that says which methods work.

#![allow(clippy::unwrap_used)]

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
    let unknown = client
        .get(format!("{}/api/v1/nothing", p.base))
        .send()
        .await
        .unwrap();
    problem(unknown, 404, "not_found").await;
    p.stop().await;
}
