//! Every service binary, and the all-in-one runner, as an operator runs
//! them: start on random ports, answer health and metrics, stop on SIGTERM
//! with exit code 0; refuse bad configuration with one clear line.

#![allow(clippy::disallowed_methods)] // test clients of servers the test starts
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::{ServiceProcess, random_ports, run_to_failure, services, wait_until_ok};
use test_support::http::FetchJson;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn env_of(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

async fn grpc_serving(endpoint: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let deadline = tokio::time::Instant::now() + e2e::PROCESS_TIMEOUT;
    loop {
        let status = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        if status == ServingStatus::Serving || tokio::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Health on the public port (readiness without details), metrics and
/// detailed readiness on the admin listener only.
async fn assert_serves_health_and_metrics(client: &reqwest::Client, base: &str, admin: &str) {
    let ready = wait_until_ok(client, &format!("{base}/health/ready")).await;
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "ready": true }));
    let detailed: serde_json::Value = wait_until_ok(client, &format!("{admin}/health/ready"))
        .await
        .json()
        .await
        .unwrap();
    let checks = detailed["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "discovery" && c["ok"] == true),
        "{detailed}"
    );
    let public_metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(
        public_metrics.status(),
        404,
        "no metrics on the public port"
    );
    let live = client
        .get(format!("{base}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);

    let metrics = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_requests_total") && l.contains("path=\"/health/ready\"")),
        "readiness requests are counted under their route:\n{metrics}"
    );
    assert!(metrics.contains("process_resident_memory_bytes"));
}

#[tokio::test]
async fn every_service_binary_starts_answers_and_exits_zero_on_sigterm() {
    let client = reqwest::Client::new();
    for (name, prefix) in services() {
        let mut env = random_ports(prefix);
        env.push((
            "PLATFORM_JWT_SECRET".into(),
            "an e2e signing key, 32 bytes long".into(),
        ));
        let process = ServiceProcess::start(name, &env_of(&env), &[name]).await;
        assert_serves_health_and_metrics(&client, process.http(name), process.admin(name)).await;
        if let Some(grpc) = process.listening[name].grpc.clone() {
            assert_eq!(
                grpc_serving(&grpc).await,
                ServingStatus::Serving,
                "{name} gRPC health"
            );
        } else {
            assert_eq!(name, "gateway", "only the gateway has no gRPC API");
        }
        let status = process.terminate().await;
        assert!(status.success(), "{name} exited with {status}");
    }
}

#[tokio::test]
async fn all_in_one_runner_serves_every_service_and_exits_zero_on_sigterm() {
    let env: Vec<(String, String)> = services()
        .flat_map(|(_, prefix)| random_ports(prefix))
        .collect();
    let names: Vec<&str> = services().map(|(name, _)| name).collect();
    let mut process = ServiceProcess::start("platform", &env_of(&env), &names).await;
    let client = reqwest::Client::new();
    for name in &names {
        assert_serves_health_and_metrics(&client, process.http(name), process.admin(name)).await;
        // One problem shape from every service: the gateway relays the
        // others' errors, so clients must be able to read them all alike.
        let res = client
            .get(format!("{}/nope", process.http(name)))
            .send()
            .await
            .unwrap();
        let problem = test_support::http::problem(res, 404, "not_found").await;
        assert_eq!(problem.title, "Not Found", "{name}");
        assert_eq!(problem.detail, "no route for GET /nope", "{name}");
    }
    // Each service registered itself in the shared static registry.
    let registered = process.wait_for_logs("registered", names.len()).await;
    for name in &names {
        assert!(
            registered
                .iter()
                .any(|l| l["service"] == *name && l["registry"] == "static"),
            "{name} registered: {registered:?}"
        );
    }
    // The gateway reaches chat with the key it signed the token with.
    let gateway = process.http("gateway");
    let signed_up = client
        .post(format!("{gateway}/api/v1/users"))
        .json(&serde_json::json!({"username": "erin", "email": "erin@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 201);
    let login: serde_json::Value = client
        .post(format!("{gateway}/api/v1/auth/login"))
        .json(&serde_json::json!({"login": "erin", "password": "correct horse battery"}))
        .fetch_json()
        .await;
    let rooms = client
        .get(format!("{gateway}/api/v1/chat/rooms"))
        .bearer_auth(login["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rooms.status(), 200, "chat through the gateway");
    let status = process.terminate().await;
    assert!(status.success(), "platform exited with {status}");
}

#[tokio::test]
async fn malformed_config_exits_nonzero_with_one_line_naming_the_variable() {
    let (status, stderr) = run_to_failure("users", &[("USERS_HTTP_ADDR", "localhost-8081")]).await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "exactly one line: {stderr:?}");
    assert!(
        stderr.starts_with("error: USERS_HTTP_ADDR: invalid value \"localhost-8081\""),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));

    let (status, stderr) =
        run_to_failure("platform", &[("PLATFORM_SHUTDOWN_TIMEOUT", "soonish")]).await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("PLATFORM_SHUTDOWN_TIMEOUT"), "{stderr}");
}

#[tokio::test]
async fn chat_without_the_signing_key_exits_nonzero_with_one_line_naming_it() {
    let env = random_ports("CHAT");
    let (status, stderr) = run_to_failure("chat", &env_of(&env)).await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.starts_with("error: CHAT_JWT_SECRET"), "{stderr}");
}

#[tokio::test]
async fn unreachable_consul_exits_nonzero_with_one_line_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let consul = format!("consul://127.0.0.1:{port}");
    let mut env = random_ports("CHAT");
    env.push(("CHAT_DISCOVERY_URL".into(), consul));
    env.push((
        "CHAT_JWT_SECRET".into(),
        "an e2e signing key, 32 bytes long".into(),
    ));
    let (status, stderr) = run_to_failure("chat", &env_of(&env)).await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with("error: cannot register with service discovery (consul)"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[tokio::test]
async fn a_redis_cluster_seed_list_nobody_answers_exits_nonzero_with_one_line_naming_it() {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let url = format!(
        "redis-cluster://127.0.0.1:{}?node=127.0.0.1:{}",
        ports[0], ports[1]
    );
    // The services whose Redis users are started by configuration.
    for (name, prefix) in [("users", "USERS"), ("gateway", "GATEWAY"), ("chat", "CHAT")] {
        let mut env = random_ports(prefix);
        env.push(("PLATFORM_REDIS_URL".into(), url.clone()));
        env.push(("PLATFORM_REDIS_CONNECT_TIMEOUT".into(), "500ms".into()));
        env.push((
            "PLATFORM_JWT_SECRET".into(),
            "an e2e signing key, 32 bytes long".into(),
        ));
        let (status, stderr) = run_to_failure(name, &env_of(&env)).await;
        assert_eq!(status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr:?}");
        for port in &ports {
            assert!(
                stderr.contains(&format!("127.0.0.1:{port}")),
                "{name} names every seed: {stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn unreachable_or_unsupported_database_exits_nonzero_with_one_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/users");
    let (status, stderr) = run_to_failure("users", &[("USERS_DATABASE_URL", url.as_str())]).await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with("error: cannot open the users database"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));

    let (status, stderr) = run_to_failure(
        "users",
        &[("USERS_DATABASE_URL", "mysql://localhost/users")],
    )
    .await;
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("must start with postgres://"), "{stderr}");
}
