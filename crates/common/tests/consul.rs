//! What only the Consul backend does — the payloads it sends, tokens,
//! blocking queries, the host's registration — against the in-test agent
//! in `support::fake_consul`. What every registry does is in the contract
//! suite (`registry.rs`).

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use common::config::ServiceConfig;
use common::discovery::{ConsulRegistry, Instance, Registration, Registry};
use common::server::ServiceHost;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use support::fake_consul::start_fake;

fn instance(id: &str, port: u16) -> Instance {
    Instance {
        id: id.into(),
        service: "users".into(),
        host: "10.0.0.7".into(),
        http_port: port,
        grpc_port: Some(50051),
        tags: vec!["platform".into(), "blue".into()],
    }
}

#[tokio::test]
async fn registration_sends_the_documented_agent_payload() {
    let consul = start_fake(false);
    let registry = ConsulRegistry::new(consul.address.clone(), None);
    registry
        .register(&Registration::new(instance("users-1", 8081)))
        .await
        .unwrap();

    let requests = consul.agent.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(requests[0].path, "/v1/agent/service/register");
    assert_eq!(
        requests[0].body,
        Some(json!({
            "ID": "users-1",
            "Name": "users",
            "Tags": ["platform", "blue"],
            "Address": "10.0.0.7",
            "Port": 8081,
            "Meta": { "grpc_port": "50051" },
            "Check": {
                "HTTP": "http://10.0.0.7:8081/health/ready",
                "Interval": "10s",
                "Timeout": "5s",
                "DeregisterCriticalServiceAfter": "60s"
            }
        }))
    );
}

#[tokio::test]
async fn deregistration_uses_the_agent_endpoint_and_reports_rejections() {
    let consul = start_fake(false);
    let registry = ConsulRegistry::new(consul.address.clone(), None);
    registry
        .register(&Registration::new(instance("users-1", 8081)))
        .await
        .unwrap();
    registry.deregister("users-1").await.unwrap();
    let last = consul.agent.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("PUT", "/v1/agent/service/deregister/users-1")
    );

    let err = registry
        .deregister("users-1")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 404"), "{err}");
}

#[tokio::test]
async fn healthy_instances_are_read_from_the_documented_health_shape() {
    let consul = start_fake(false);
    let registry = ConsulRegistry::new(consul.address.clone(), None);
    let mut without_address = Registration::new(instance("users-2", 8091));
    without_address.instance.host = String::new();
    registry
        .register(&Registration::new(instance("users-1", 8081)))
        .await
        .unwrap();
    registry.register(&without_address).await.unwrap();

    let found = registry.healthy_instances("users").await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0], instance("users-1", 8081));
    // An empty service address means "the node's address".
    assert_eq!(found[1].host, "10.1.10.12");
    assert_eq!(found[1].http_port, 8091);
    assert_eq!(found[1].grpc_port, Some(50051));

    let query = consul.agent.requests().pop().unwrap();
    assert_eq!(query.method, "GET");
    assert_eq!(query.path, "/v1/health/service/users");
    assert_eq!(query.query, "passing");
    assert!(
        registry
            .healthy_instances("search")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn watch_follows_changes_through_blocking_queries() {
    let consul = start_fake(false);
    let registry =
        ConsulRegistry::with_blocking_wait(consul.address.clone(), None, Duration::from_secs(30));
    registry
        .register(&Registration::new(instance("users-1", 8081)))
        .await
        .unwrap();

    let mut watch = registry.watch("users");
    tokio::time::timeout(
        Duration::from_secs(5),
        watch.wait_for(|list| list.len() == 1),
    )
    .await
    .expect("first answer")
    .unwrap();

    registry
        .register(&Registration::new(instance("users-2", 8091)))
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        watch.wait_for(|list| list.len() == 2),
    )
    .await
    .expect("a registration reaches the watcher without polling delay")
    .unwrap();

    registry.deregister("users-1").await.unwrap();
    let list = tokio::time::timeout(
        Duration::from_secs(5),
        watch.wait_for(|list| list.len() == 1),
    )
    .await
    .expect("a deregistration reaches the watcher")
    .unwrap()
    .clone();
    assert_eq!(list[0].id, "users-2");

    let blocking = consul
        .agent
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/health/service/users" && r.query.contains("index="))
        .count();
    assert!(
        blocking >= 2,
        "changes must arrive through blocking queries"
    );
    let sample = consul
        .agent
        .requests()
        .into_iter()
        .find(|r| r.query.contains("index="))
        .unwrap();
    assert!(
        sample.query.starts_with("passing&index="),
        "{}",
        sample.query
    );
    assert!(sample.query.ends_with("&wait=30s"), "{}", sample.query);
}

#[tokio::test]
async fn host_registers_a_passing_check_on_start_and_deregisters_on_shutdown() {
    let consul = start_fake(true);
    let registry: Arc<dyn Registry> = Arc::new(ConsulRegistry::new(consul.address.clone(), None));
    let host = ServiceHost::builder(ServiceConfig::ephemeral("consul-host", true))
        .registry(registry.clone())
        .build()
        .unwrap();
    let http_port = host.http_addr().port();
    let admin_port = host.admin_addr().port();
    let stop = CancellationToken::new();
    let running = tokio::spawn(host.run_until_stopped(stop.clone().cancelled_owned()));

    // The fake runs the registered HTTP check against the real host.
    let found = test_support::eventually_some(
        Duration::from_secs(5),
        "the host to register with a passing check",
        || async {
            Some(registry.healthy_instances("consul-host").await.unwrap())
                .filter(|found| !found.is_empty())
        },
    )
    .await;
    assert_eq!(found.len(), 1, "one instance");
    assert_eq!(found[0].http_port, http_port);
    assert!(found[0].tags.contains(&"platform".to_owned()));
    // Prometheus follows Consul to the admin listener through the meta.
    let registered = consul
        .agent
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/agent/service/register")
        .and_then(|r| r.body)
        .unwrap();
    assert_eq!(registered["Meta"]["admin_port"], admin_port.to_string());

    stop.cancel();
    running.await.unwrap().unwrap();
    assert!(
        registry
            .healthy_instances("consul-host")
            .await
            .unwrap()
            .is_empty()
    );
    let paths: Vec<String> = consul
        .agent
        .requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/v1/agent/service/deregister/consul-host-"))
    );
}

#[tokio::test]
async fn unreachable_consul_fails_start_with_a_clear_error() {
    // Nothing listens on a port we bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registry = Arc::new(ConsulRegistry::new(
        format!("http://127.0.0.1:{port}"),
        None,
    ));
    let host = ServiceHost::builder(ServiceConfig::ephemeral("consul-down", false))
        .registry(registry)
        .build()
        .unwrap();
    let err = host
        .run_until_stopped(std::future::pending())
        .await
        .expect_err("start must fail");
    let err = common::exit::chain(&err);
    assert!(
        err.starts_with("cannot register with service discovery (consul)"),
        "{err}"
    );
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[tokio::test]
async fn token_is_sent_on_every_request() {
    let consul = start_fake(false);
    let registry = ConsulRegistry::new(
        consul.address.clone(),
        Some(common::config::Secret::new("s3cr3t")),
    );
    registry.ping().await.unwrap();
    registry
        .register(&Registration::new(instance("users-1", 8081)))
        .await
        .unwrap();
    registry.healthy_instances("users").await.unwrap();
    registry.deregister("users-1").await.unwrap();
    let recorded = consul.agent.requests();
    assert_eq!(recorded.len(), 4);
    assert!(
        recorded
            .iter()
            .all(|r| r.token.as_deref() == Some("s3cr3t")),
        "{recorded:?}"
    );

    let anonymous = ConsulRegistry::new(consul.address.clone(), None);
    anonymous.ping().await.unwrap();
    assert_eq!(consul.agent.requests().pop().unwrap().token, None);
}
