//! HTTP pass-through to a service found through discovery.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // test clients of servers the test starts

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use common::discovery::{Instance, Registration};
use common::service::Shared;
use gateway::test_util::{TestApp, spawn_app};
use reqwest::StatusCode;
use test_support::http::problem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers with what it received, hop headers included.
async fn echo(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let header = |name: &str| {
        let values: Vec<&str> = req
            .headers()
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    HttpResponse::Ok()
        .insert_header(("x-upstream", "echo"))
        .json(serde_json::json!({
            "path": req.path(),
            "query": req.query_string(),
            "method": req.method().as_str(),
            "request_id": header("x-request-id"),
            "forwarded": header("forwarded"),
            "x_forwarded_for": header("x-forwarded-for"),
            "x_forwarded_host": header("x-forwarded-host"),
            "x_forwarded_proto": header("x-forwarded-proto"),
            "x_forwarded_prefix": header("x-forwarded-prefix"),
            "x_real_ip": header("x-real-ip"),
            "body": String::from_utf8_lossy(&body),
        }))
}

/// A gateway with `vars` that passes `/api/v1/echo` to a running echo
/// service.
async fn with_echo(vars: &[(&str, &str)]) -> (TestApp, ServerHandle) {
    let mut all = vec![("GATEWAY_PASSTHROUGH", "/api/v1/echo=echo")];
    all.extend_from_slice(vars);
    let p = spawn_app(&all, &Shared::default()).await;
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
    (p, handle)
}

#[tokio::test]
async fn requests_pass_through_to_a_discovered_http_service() {
    let (p, handle) = with_echo(&[]).await;
    let client = reqwest::Client::new();
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

#[tokio::test]
async fn forged_hop_headers_are_replaced_by_the_gateways_own() {
    let (p, handle) = with_echo(&[]).await;
    let host = p.base.trim_start_matches("http://").to_owned();
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/echo/who", p.base))
        .header("forwarded", "for=6.6.6.6;proto=https;host=evil.example")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-prefix", "/admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["forwarded"], serde_json::Value::Null, "{body}");
    assert_eq!(
        body["x_forwarded_prefix"],
        serde_json::Value::Null,
        "{body}"
    );
    assert_eq!(body["x_forwarded_for"], "127.0.0.1", "{body}");
    assert_eq!(body["x_real_ip"], "127.0.0.1", "{body}");
    assert_eq!(body["x_forwarded_host"], host.as_str(), "{body}");
    assert_eq!(body["x_forwarded_proto"], "http", "{body}");
    handle.stop(false).await;
    p.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_its_client_is_forwarded() {
    let (p, handle) = with_echo(&[("GATEWAY_TRUSTED_PROXIES", "127.0.0.0/8")]).await;
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/echo/who", p.base))
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.7")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["x_forwarded_for"], "198.51.100.7", "{body}");
    assert_eq!(body["x_real_ip"], "198.51.100.7", "{body}");
    assert_eq!(body["x_forwarded_proto"], "https", "{body}");
    handle.stop(false).await;
    p.stop().await;
}

/// Sends `target` as written: HTTP clients resolve dot segments before
/// sending, an attacker does not.
async fn raw_get(base: &str, target: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn dot_segments_and_encoded_separators_are_refused() {
    let (p, handle) = with_echo(&[]).await;
    for target in [
        "/api/v1/echo/../users",
        "/api/v1/echo/%2e%2e/admin",
        "/api/v1/echo/x/..%2f..%2fadmin",
        "/api/v1/echo/./x",
    ] {
        let answer = raw_get(&p.base, target).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
        assert!(
            answer.contains("application/problem+json"),
            "{target}: {answer}"
        );
        assert!(answer.contains("invalid_path"), "{target}: {answer}");
    }
    let answer = raw_get(&p.base, "/api/v1/echo//a//b").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""path":"/api/v1/echo/a/b""#), "{answer}");
    handle.stop(false).await;
    p.stop().await;
}

/// How many of `n` requests with `x-forwarded-for: xff` pass.
async fn passes(p: &TestApp, xff: &str, n: usize) -> usize {
    let client = reqwest::Client::new();
    let mut passed = 0;
    for _ in 0..n {
        let res = client
            .get(format!("{}/api/v1/echo/x", p.base))
            .header("x-forwarded-for", xff)
            .send()
            .await
            .unwrap();
        match res.status() {
            StatusCode::OK => passed += 1,
            _ => {
                problem(res, 429, "rate_limited").await;
            }
        }
    }
    passed
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_does_not_buy_a_fresh_bucket() {
    let (p, handle) = with_echo(&[("GATEWAY_RATE_LIMIT_REQUESTS", "3")]).await;
    let mut passed = 0;
    for i in 0..6 {
        passed += passes(&p, &format!("203.0.113.{i}"), 1).await;
    }
    assert_eq!(passed, 3, "one bucket for the peer, whatever it claims");
    handle.stop(false).await;
    p.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_proxy_keys_each_client() {
    let (p, handle) = with_echo(&[
        ("GATEWAY_RATE_LIMIT_REQUESTS", "3"),
        ("GATEWAY_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    assert_eq!(passes(&p, "203.0.113.1", 5).await, 3);
    assert_eq!(passes(&p, "203.0.113.2", 5).await, 3, "another client");
    // The left-most entry is the client's own claim: it changes nothing.
    assert_eq!(passes(&p, "9.9.9.9, 203.0.113.1", 1).await, 0);
    // Addresses inside one IPv6 /64 share a bucket.
    assert_eq!(passes(&p, "2001:db8:0:1::1", 2).await, 2);
    assert_eq!(passes(&p, "2001:db8:0:1::ffff", 2).await, 1);
    handle.stop(false).await;
    p.stop().await;
}
