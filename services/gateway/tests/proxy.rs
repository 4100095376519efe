//! HTTP pass-through to a service found through discovery.

#![allow(clippy::unwrap_used)]

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use common::discovery::{Instance, Registration};
use common::service::Shared;
use gateway::test_util::spawn_app;
use reqwest::StatusCode;
use test_support::http::problem;

async fn echo(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    HttpResponse::Ok()
        .insert_header(("x-upstream", "echo"))
        .json(serde_json::json!({
            "path": req.path(),
            "query": req.query_string(),
            "method": req.method().as_str(),
            "request_id": request_id,
            "body": String::from_utf8_lossy(&body),
        }))
}

#[tokio::test]
async fn requests_pass_through_to_a_discovered_http_service() {
    let p = spawn_app(
        &[("GATEWAY_PASSTHROUGH", "/api/v1/echo=echo")],
        &Shared::default(),
    )
    .await;
    let client = reqwest::Client::new();
    let server = HttpServer::new(|| App::new().default_service(web::to(echo)))
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    p.registry
        .register(&Registration::new(Instance {
            id: "echo-1".into(),
            service: "echo".into(),
            host: "127.0.0.1".into(),
            http_port: port,
            grpc_port: None,
            tags: vec![],
        }))
        .await
        .unwrap();

    let res = client
        .post(format!("{}/api/v1/echo/things/7?x=1", p.base))
        .header("x-request-id", "proxy-test")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-upstream"], "echo");
    assert!(
        res.headers().contains_key("x-ratelimit-limit"),
        "rate limited like the REST API"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["path"], "/api/v1/echo/things/7");
    assert_eq!(body["query"], "x=1");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["body"], "hello");
    assert_eq!(body["request_id"], "proxy-test");

    handle.stop(false).await;
    let res = client
        .get(format!("{}/api/v1/echo/x", p.base))
        .send()
        .await
        .unwrap();
    problem(res, 503, "upstream_unavailable").await;
    p.stop().await;
}
