//! The Consul backend against an in-test agent that checks requests against
//! Consul's documented HTTP API and answers with its documented shapes.
//! (No Consul server can run on the CI machines.)
//!
//! API references:
//! - <https://developer.hashicorp.com/consul/api-docs/agent/service#register-service>
//! - <https://developer.hashicorp.com/consul/api-docs/agent/service#deregister-service>
//! - <https://developer.hashicorp.com/consul/api-docs/health#list-service-instances-for-service>
//! - <https://developer.hashicorp.com/consul/api-docs/features/blocking>

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use common::config::ServiceConfig;
use common::discovery::{ConsulRegistry, Instance, Registration, Registry};
use common::server::ServiceHost;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    query: String,
    token: Option<String>,
    body: Option<Value>,
}

/// State of the fake agent: registered services and the Raft-like index
/// that blocking queries wait on.
#[derive(Default)]
struct Agent {
    requests: Mutex<Vec<Recorded>>,
    services: Mutex<BTreeMap<String, Value>>,
    index: Mutex<u64>,
    changed: Notify,
    /// Run each registration's HTTP check before listing it as passing.
    run_checks: bool,
}

impl Agent {
    fn record(&self, req: &HttpRequest, body: Option<Value>) {
        self.requests.lock().unwrap().push(Recorded {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            query: req.query_string().to_owned(),
            token: req
                .headers()
                .get("X-Consul-Token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
        });
    }

    fn bump(&self) {
        *self.index.lock().unwrap() += 1;
        self.changed.notify_waiters();
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

struct FakeConsul {
    agent: Arc<Agent>,
    address: String,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

async fn register(req: HttpRequest, agent: web::Data<Agent>, body: web::Bytes) -> HttpResponse {
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().body("Request decode failed");
    };
    agent.record(&req, Some(payload.clone()));
    // Consul requires Name; ID defaults to Name but we always send one.
    let (Some(_), Some(id)) = (payload["Name"].as_str(), payload["ID"].as_str()) else {
        return HttpResponse::BadRequest().body("Missing service name");
    };
    agent
        .services
        .lock()
        .unwrap()
        .insert(id.to_owned(), payload.clone());
    agent.bump();
    HttpResponse::Ok().finish()
}

async fn deregister(
    req: HttpRequest,
    agent: web::Data<Agent>,
    id: web::Path<String>,
) -> HttpResponse {
    agent.record(&req, None);
    if agent.services.lock().unwrap().remove(id.as_str()).is_none() {
        return HttpResponse::NotFound().body(format!("Unknown service ID {:?}", id.as_str()));
    }
    agent.bump();
    HttpResponse::Ok().finish()
}

async fn health_service(
    req: HttpRequest,
    agent: web::Data<Agent>,
    name: web::Path<String>,
) -> HttpResponse {
    agent.record(&req, None);
    let query = req.query_string().to_owned();
    if query_param(&query, "passing").is_none() {
        return HttpResponse::BadRequest().body("this fake only serves ?passing queries");
    }
    // Blocking query: hold the request until the index moves past the
    // client's or `wait` elapses.
    if let Some(index) = query_param(&query, "index").and_then(|i| i.parse::<u64>().ok()) {
        let wait = query_param(&query, "wait")
            .and_then(|w| w.strip_suffix('s'))
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(300);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        while *agent.index.lock().unwrap() <= index {
            let notified = agent.changed.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }
    let services: Vec<Value> = agent
        .services
        .lock()
        .unwrap()
        .values()
        .filter(|s| s["Name"] == name.as_str())
        .cloned()
        .collect();
    let mut entries = Vec::new();
    for service in services {
        if agent.run_checks {
            let url = service["Check"]["HTTP"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let passing = matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success());
            if !passing {
                continue;
            }
        }
        entries.push(json!({
            "Node": {
                "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
                "Node": "foobar",
                "Address": "10.1.10.12",
                "Datacenter": "dc1",
                "TaggedAddresses": { "lan": "10.1.10.12", "wan": "10.1.10.12" },
                "Meta": { "instance_type": "t2.medium" }
            },
            "Service": {
                "ID": service["ID"],
                "Service": service["Name"],
                "Tags": service["Tags"],
                "Address": service["Address"],
                "Meta": service["Meta"],
                "Port": service["Port"],
                "Weights": { "Passing": 10, "Warning": 1 },
                "Namespace": "default"
            },
            "Checks": [{
                "Node": "foobar",
                "CheckID": format!("service:{}", service["ID"].as_str().unwrap_or_default()),
                "Name": "Service check",
                "Status": "passing",
                "Notes": "",
                "Output": "HTTP GET: 200 OK",
                "ServiceID": service["ID"],
                "ServiceName": service["Name"],
                "ServiceTags": service["Tags"],
                "Namespace": "default"
            }]
        }));
    }
    let index = *agent.index.lock().unwrap();
    HttpResponse::Ok()
        .insert_header(("X-Consul-Index", index.max(1).to_string()))
        .insert_header(("X-Consul-KnownLeader", "true"))
        .json(entries)
}

async fn leader(req: HttpRequest, agent: web::Data<Agent>) -> HttpResponse {
    agent.record(&req, None);
    HttpResponse::Ok().json("10.1.10.12:8300")
}

fn start_fake(run_checks: bool) -> FakeConsul {
    let agent = Arc::new(Agent {
        run_checks,
        ..Agent::default()
    });
    let data = web::Data::from(agent.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/v1/agent/service/register", web::put().to(register))
            .route(
                "/v1/agent/service/deregister/{id}",
                web::put().to(deregister),
            )
            .route("/v1/health/service/{name}", web::get().to(health_service))
            .route("/v1/status/leader", web::get().to(leader))
            .default_service(web::to(|| async {
                HttpResponse::NotFound().body("404 page not found")
            }))
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let address = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    FakeConsul {
        agent,
        address,
        handle,
    }
}

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
    let stop = CancellationToken::new();
    let running = tokio::spawn(host.run_until_stopped(stop.clone().cancelled_owned()));

    // The fake runs the registered HTTP check against the real host.
    let mut found = Vec::new();
    for _ in 0..100 {
        found = registry.healthy_instances("consul-host").await.unwrap();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found.len(), 1, "instance registered with a passing check");
    assert_eq!(found[0].http_port, http_port);
    assert!(found[0].tags.contains(&"platform".to_owned()));

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
