//! Test support: a real users service and a real gateway on random ports,
//! sharing a static registry.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use common::config::{Env, ServiceConfig};
use common::discovery::{Registry, StaticRegistry};
use common::server::ServerError;
use common::shutdown::CancellationToken;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Running {
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub fn run(host: common::server::ServiceHost) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(host.run_until_stopped(stop.clone().cancelled_owned()));
    Running { stop, task }
}

pub struct Platform {
    pub base: String,
    pub client: reqwest::Client,
    pub registry: Arc<dyn Registry>,
    pub users: Option<Running>,
    pub gateway: Running,
    pub dir: TempDir,
}

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn start_users(registry: &Arc<dyn Registry>, dir: &std::path::Path) -> Running {
    let mut config = users::Config::from_source(&Env::from_map(
        "USERS",
        [(
            "USERS_DATABASE_URL",
            format!("sqlite://{}/users.db", dir.display()),
        )],
    ))
    .unwrap();
    config.service = ServiceConfig::ephemeral("users", true);
    config.cache.disk_dir = Some(dir.join("cache"));
    let host = users::host(config)
        .await
        .unwrap()
        .registry(registry.clone())
        .build()
        .unwrap();
    let running = run(host);
    // Registration happens as the host starts.
    for _ in 0..100 {
        if !registry
            .healthy_instances("users")
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running
}

pub async fn platform() -> Platform {
    platform_with(&[]).await
}

pub async fn platform_with(extra: &[(&str, &str)]) -> Platform {
    let dir = TempDir(
        std::env::temp_dir().join(format!("gateway-test-{}", uuid::Uuid::new_v4().simple())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let registry: Arc<dyn Registry> = Arc::new(StaticRegistry::new(vec![]));
    let users = start_users(&registry, &dir.0).await;
    let mut vars = vec![
        (
            "GATEWAY_JWT_SECRET",
            "0123456789abcdef0123456789abcdef-test",
        ),
        ("GATEWAY_UPSTREAM_TIMEOUT", "2s"),
        ("GATEWAY_BREAKER_MIN_CALLS", "4"),
        ("GATEWAY_BREAKER_OPEN_FOR", "1s"),
        ("GATEWAY_RATE_LIMIT_REQUESTS", "10000"),
    ];
    vars.extend_from_slice(extra);
    let mut config = gateway::Config::from_source(&Env::from_map("GATEWAY", vars)).unwrap();
    config.service = ServiceConfig::ephemeral("gateway", false);
    let host = gateway::host_with_registry(config, Some(registry.clone()))
        .await
        .unwrap()
        .build()
        .unwrap();
    let base = format!("http://{}", host.http_addr());
    Platform {
        base,
        client: reqwest::Client::new(),
        registry,
        users: Some(users),
        gateway: run(host),
        dir,
    }
}

impl Platform {
    pub async fn sign_up(&self, name: &str) -> Value {
        let res = self
            .client
            .post(format!("{}/api/v1/users", self.base))
            .json(&json!({ "username": name, "email": format!("{name}@example.com"), "password": "correct horse battery" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    pub async fn login(&self, name: &str) -> String {
        let res = self
            .client
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({ "login": name, "password": "correct horse battery" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn patch(&self, id: u64, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut req = self
            .client
            .patch(format!("{}/api/v1/users/{id}", self.base))
            .json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    pub async fn stop(mut self) {
        self.gateway.stop().await;
        if let Some(users) = self.users.take() {
            users.stop().await;
        }
    }
}

pub async fn problem(res: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    body
}

pub fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
