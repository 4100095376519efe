//! An in-test Consul agent that checks requests against Consul's
//! documented HTTP API and answers with its documented shapes. (No Consul
//! server can run on the CI machines.)
//!
//! API references:
//! - <https://developer.hashicorp.com/consul/api-docs/agent/service#register-service>
//! - <https://developer.hashicorp.com/consul/api-docs/agent/service#deregister-service>
//! - <https://developer.hashicorp.com/consul/api-docs/health#list-service-instances-for-service>
//! - <https://developer.hashicorp.com/consul/api-docs/features/blocking>

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub token: Option<String>,
    pub body: Option<Value>,
}

/// State of the fake agent: registered services and the Raft-like index
/// that blocking queries wait on.
#[derive(Default)]
pub struct Agent {
    pub requests: Mutex<Vec<Recorded>>,
    pub services: Mutex<BTreeMap<String, Value>>,
    pub index: Mutex<u64>,
    pub changed: Notify,
    /// Run each registration's HTTP check before listing it as passing.
    pub run_checks: bool,
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

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

pub struct FakeConsul {
    pub agent: Arc<Agent>,
    pub address: String,
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

pub fn start_fake(run_checks: bool) -> FakeConsul {
    // A real agent's index is already past 1 before anything registers
    // (never 0); starting at 0 would make the first change invisible to
    // a blocking query that was answered index 1 for an empty list.
    let agent = Arc::new(Agent {
        run_checks,
        index: Mutex::new(1),
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
