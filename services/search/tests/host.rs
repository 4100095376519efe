//! The service's host: what every service answers before it has an API of
//! its own.

#![allow(clippy::unwrap_used)]

use common::service::Shared;
use search::test_util::spawn_app;

#[tokio::test]
async fn the_host_answers_health_and_unknown_paths_with_a_problem() {
    let app = spawn_app(&Shared::default()).await;
    let client = reqwest::Client::new();
    let live = client
        .get(format!("{}/health/live", app.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);

    let nope = client
        .get(format!("{}/nope", app.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(nope.status(), 404);
    assert_eq!(nope.headers()["content-type"], "application/problem+json");
    let body: common::problem::ProblemBody = nope.json().await.unwrap();
    assert_eq!(body.code, "not_found");
    assert_eq!(body.kind, "urn:platform:problem:not_found");
    app.stop().await;
}
