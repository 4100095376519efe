//! Several services in this test process, on random ports, sharing one
//! static registry: the users service and the gateway (and chat, for the
//! tests that need it), each started through its own `test_util`.

#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::sync::Arc;
use std::time::Duration;

use common::discovery::{Registry, StaticRegistry};
use common::events::{EventBus, MemoryBus};
use common::service::Shared;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{TempDir, eventually};

/// How long a service gets to appear in the registry.
const REGISTRATION: Duration = Duration::from_secs(10);

/// The users service and the gateway in front of it.
pub struct Platform {
    pub base: String,
    /// The gateway's admin listener.
    pub admin: String,
    pub client: reqwest::Client,
    pub registry: Arc<dyn Registry>,
    /// Where the users service publishes its events, and search reads them.
    pub bus: Arc<MemoryBus>,
    pub users: Option<users::test_util::TestApp>,
    pub gateway: gateway::test_util::TestApp,
    /// Holds the users database, so a restarted users service finds its
    /// data again.
    pub dir: TempDir,
}

impl Platform {
    /// Users and a gateway with the test defaults.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Users and a gateway with `vars` (`GATEWAY_*`) over the test
    /// defaults.
    pub async fn start_with(vars: &[(&str, &str)]) -> Self {
        Self::start_with_users(vars, users::test_util::Options::default()).await
    }

    /// As [`Platform::start_with`], with the users service started with
    /// `options` (its database is always the platform's own file).
    pub async fn start_with_users(
        vars: &[(&str, &str)],
        options: users::test_util::Options,
    ) -> Self {
        let dir = TempDir::new("platform-test");
        let registry: Arc<dyn Registry> = Arc::new(StaticRegistry::new(vec![]));
        let bus = Arc::new(MemoryBus::default());
        let users = start_users(&registry, &bus, &dir, options).await;
        let gateway =
            gateway::test_util::spawn_app(vars, &Shared::default().with_registry(registry.clone()))
                .await;
        Self {
            base: gateway.base.clone(),
            admin: gateway.admin.clone(),
            client: reqwest::Client::new(),
            registry,
            bus,
            users: Some(users),
            gateway,
            dir,
        }
    }

    /// A chat replica registered where the gateway looks, verifying the
    /// gateway's tokens.
    pub async fn start_chat(&self, vars: &[(&str, &str)]) -> chat::test_util::TestApp {
        let mut all = vec![("CHAT_JWT_SECRET", gateway::test_util::SIGNING_KEY)];
        all.extend_from_slice(vars);
        let app = chat::test_util::spawn_app(
            &all,
            &Shared::default().with_registry(self.registry.clone()),
        )
        .await;
        wait_registered(&self.registry, "chat").await;
        app
    }

    /// A notifications instance registered where the gateway looks,
    /// verifying the gateway's tokens; events for it go to its `bus`.
    pub async fn start_notifications(&self) -> notifications::test_util::TestApp {
        let app = notifications::test_util::spawn_app(
            &[("NOTIFICATIONS_JWT_SECRET", gateway::test_util::SIGNING_KEY)],
            &Shared::default().with_registry(self.registry.clone()),
            None,
        )
        .await;
        wait_registered(&self.registry, "notifications").await;
        app
    }

    /// A search replica registered where the gateway looks, reading the
    /// users service's events, with `vars` (`SEARCH_*`) over the test
    /// defaults.
    pub async fn start_search(&self, vars: &[(&str, &str)]) -> search::test_util::TestApp {
        let app = search::test_util::spawn_app(
            vars,
            &Shared::default().with_registry(self.registry.clone()),
            Some(self.bus.clone()),
        )
        .await;
        wait_registered(&self.registry, "search").await;
        app
    }

    /// A new users instance on the same database, replacing the registry's
    /// entries for the old one.
    pub async fn restart_users(&mut self) {
        if let Some(users) = self.users.take() {
            users.stop().await;
        }
        for stale in self.registry.healthy_instances("users").await.unwrap() {
            self.registry.deregister(&stale.id).await.unwrap();
        }
        self.users =
            Some(start_users(&self.registry, &self.bus, &self.dir, Default::default()).await);
    }

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
        self.sign_in(name).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The whole answer of a sign-in: access and refresh token.
    pub async fn sign_in(&self, name: &str) -> Value {
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
        body
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

    /// The Prometheus text on the gateway's admin listener (in this test
    /// process, every in-process service's metrics).
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops every service, asserting each exits cleanly.
    pub async fn stop(mut self) {
        self.gateway.stop().await;
        if let Some(users) = self.users.take() {
            users.stop().await;
        }
    }
}

async fn start_users(
    registry: &Arc<dyn Registry>,
    bus: &Arc<MemoryBus>,
    dir: &TempDir,
    options: users::test_util::Options,
) -> users::test_util::TestApp {
    let options = users::test_util::Options {
        database_url: Some(dir.sqlite_url("users.db")),
        ..options
    };
    let shared = Shared::default()
        .with_registry(registry.clone())
        .with_events(bus.clone() as Arc<dyn EventBus>);
    let app = users::test_util::spawn_app(options, &shared).await;
    wait_registered(registry, "users").await;
    app
}

/// Waits until `service` has a healthy instance in `registry`.
pub async fn wait_registered(registry: &Arc<dyn Registry>, service: &str) {
    eventually(REGISTRATION, &format!("{service} to register"), || async {
        !registry
            .healthy_instances(service)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
}

/// Asserts that `res` is a problem with `status` and `code`; returns its
/// body as JSON.
pub async fn problem(res: reqwest::Response, status: StatusCode, code: &str) -> Value {
    let problem = test_support::http::problem(res, status.as_u16(), code).await;
    serde_json::to_value(problem).unwrap()
}

/// Base64url without padding, as JWT segments are encoded.
pub fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
