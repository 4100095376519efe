//! A service host on random ports, driven over real HTTP and gRPC.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // test clients of servers the test starts

use std::time::Duration;
use test_support::http::FetchJson;

use actix_web::{HttpResponse, web};
use common::config::ServiceConfig;
use common::server::ServiceHost;
use test_support::http::problem;
use test_support::{TestHost, eventually};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn start(name: &'static str) -> TestHost {
    TestHost::spawn(
        ServiceHost::builder(ServiceConfig::ephemeral(name, true)).http(|cfg| {
            cfg.route(
                "/orders/{id}",
                web::get().to(|id: web::Path<u64>| async move {
                    HttpResponse::Ok().json(serde_json::json!({ "id": *id }))
                }),
            );
        }),
    )
}

#[tokio::test]
async fn service_routes_show_in_metrics_under_their_template() {
    let svc = start("host-metrics");
    let client = reqwest::Client::new();
    for id in [1, 2, 3, 4] {
        let res = client
            .get(format!("{}/orders/{id}", svc.http_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    let text = client
        .get(format!("{}/metrics", svc.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("http_requests_total")
                && l.contains("service=\"host-metrics\"")
                && l.contains("path=\"/orders/{id}\"")
        })
        .unwrap_or_else(|| panic!("no request counter in:\n{text}"));
    assert!(line.contains("status=\"200\""), "{line}");
    assert!(line.ends_with(" 4"), "{line}");
    assert!(
        !text.contains("/orders/1\""),
        "raw URLs must not become labels"
    );
    assert!(text.contains("process_resident_memory_bytes"));
    assert!(text.contains("tokio_alive_tasks"));

    svc.stop().await;
}

#[tokio::test]
async fn health_endpoints_and_grpc_health_report_ready() {
    let svc = start("host-health");
    let client = reqwest::Client::new();
    let live = client
        .get(format!("{}/health/live", svc.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready = client
        .get(format!("{}/health/ready", svc.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "ready": true }),
        "no details in public"
    );
    let detailed: serde_json::Value = client
        .get(format!("{}/health/ready", svc.admin_url()))
        .fetch_json()
        .await;
    assert_eq!(detailed["ready"], true);
    assert_eq!(detailed["checks"][0]["name"], "discovery");

    let channel = tonic::transport::Endpoint::from_shared(svc.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel);
    // The host syncs gRPC health with readiness right after start.
    eventually(
        Duration::from_secs(5),
        "gRPC health to report SERVING",
        || {
            let mut health = health.clone();
            async move {
                let status = health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .status();
                status == ServingStatus::Serving
            }
        },
    )
    .await;

    svc.stop().await;
}

#[tokio::test]
async fn unknown_path_gets_a_problem_body() {
    let svc = start("host-404");
    let res = reqwest::get(format!("{}/no/such/thing", svc.http_url()))
        .await
        .unwrap();
    let body = problem(res, 404, "not_found").await;
    assert_eq!(body.detail, "no route for GET /no/such/thing");

    svc.stop().await;
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_bind_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = ServiceConfig::ephemeral("host-bind", false);
    config.http_addr = taken.local_addr().unwrap();
    let err = ServiceHost::builder(config)
        .build()
        .err()
        .expect("port is taken");
    let message = err.to_string();
    assert!(
        message.starts_with("cannot listen on 127.0.0.1:"),
        "{message}"
    );
    assert!(message.contains("for http"), "{message}");
}
