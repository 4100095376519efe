//! Typed helpers for tests that run this service (feature `test-util`).

use std::sync::Arc;
use std::time::Duration;

use common::auth::{TokenPolicy, TokenSigner, TokenUse};
use common::config::{Env, ServiceConfig};
use common::events::{EventBus, MemoryBus};
use common::service::Shared;
use test_support::{TempDir, TestHost};

use crate::Config;

/// The key test tokens are signed with (the service only verifies them).
pub const SIGNING_KEY: &str = "a notifications test signing key!";

/// The service on random loopback ports, on a SQLite file of its own and
/// an in-process bus the test can publish to.
pub struct TestApp {
    pub host: TestHost,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub bus: Arc<MemoryBus>,
    _dir: Option<TempDir>,
}

impl TestApp {
    /// Stops the service, asserting a clean exit.
    pub async fn stop(self) {
        self.host.stop().await;
    }
}

/// An access token for user `id`, as the gateway would issue it.
pub fn token(id: u64) -> String {
    token_for(id, Duration::from_secs(600))
}

/// An access token for user `id` that lives `ttl`.
pub fn token_for(id: u64, ttl: Duration) -> String {
    let policy = TokenPolicy {
        access_ttl: ttl,
        ..TokenPolicy::default()
    };
    TokenSigner::hs256(SIGNING_KEY.as_bytes(), policy)
        .and_then(|signer| signer.issue(id, &format!("user{id}"), TokenUse::Access, None))
        .map(|issued| issued.token)
        .expect("a test token can be signed")
}

/// A `UserCreated` event for `user` named `name`, as the users service
/// publishes it.
pub fn user_created(event_id: &str, user: i64, name: &str) -> common::events::CloudEvent {
    common::events::CloudEvent {
        id: event_id.to_owned(),
        source: "/users".into(),
        event_type: "UserCreated".into(),
        subject: user.to_string(),
        time: "2026-12-03T12:00:00Z".into(),
        aggregate_version: 1,
        schema_version: 1,
        traceparent: None,
        data: serde_json::json!({
            "id": user, "username": name, "email": format!("{name}@example.com")
        })
        .to_string()
        .into_bytes(),
    }
}

/// Starts the service with `vars` (`NOTIFICATIONS_*`) over the defaults,
/// [`SIGNING_KEY`] and, unless `vars` names one, a database file of its
/// own; on `bus` if given, else on a new in-process one.
pub async fn spawn_app(
    vars: &[(&str, &str)],
    shared: &Shared,
    bus: Option<Arc<MemoryBus>>,
) -> TestApp {
    let dir = TempDir::new("notifications-test");
    let database = format!("sqlite://{}/notifications.db", dir.path().display());
    let mut all = vec![("NOTIFICATIONS_JWT_SECRET", SIGNING_KEY)];
    if !vars.iter().any(|(k, _)| *k == "NOTIFICATIONS_DATABASE_URL") {
        all.push(("NOTIFICATIONS_DATABASE_URL", database.as_str()));
    }
    all.extend_from_slice(vars);
    let mut config = Config::from_source(&Env::from_map(
        crate::config::ENV_PREFIX,
        all.iter().copied(),
    ))
    .expect("the test configuration is valid");
    config.service = ServiceConfig::ephemeral(crate::config::DEFAULTS.name, true);
    let bus = bus.unwrap_or_default();
    let shared = shared.clone().with_events(bus.clone() as Arc<dyn EventBus>);
    let builder = crate::build(config, &shared)
        .await
        .unwrap_or_else(|e| panic!("notifications must start: {}", common::exit::chain(&e)));
    let host = TestHost::spawn(builder);
    TestApp {
        base: host.http_url(),
        host,
        bus,
        _dir: Some(dir),
    }
}

/// An open event stream and what it has sent so far.
pub struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    /// Opens `user`'s stream, resuming after `last_event_id` if given.
    pub async fn open(app: &TestApp, user: u64, last_event_id: Option<&str>) -> Self {
        Self::open_at(&app.base, user, last_event_id).await
    }

    /// As [`Sse::open`], on the service at `base` (`http://host:port`).
    #[allow(clippy::disallowed_methods)] // a test client: the stream has no end
    pub async fn open_at(base: &str, user: u64, last_event_id: Option<&str>) -> Self {
        let mut req = reqwest::Client::new()
            .get(format!("{base}/api/v1/notifications/stream"))
            .bearer_auth(token(user));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let response = req.send().await.expect("the stream answers");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event or comment block, within `wait`.
    pub async fn next_block(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return Some(block);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buffer.push_str(std::str::from_utf8(&chunk).ok()?);
        }
    }

    /// Whether the stream ends (the server closes it) within `wait`,
    /// whatever it sends before.
    pub async fn ends_within(&mut self, wait: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return false,
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None) | Err(_)) => return true,
            }
        }
    }

    /// The next notification event: (id, data), skipping comments.
    pub async fn next_event(&mut self, wait: Duration) -> Option<(i64, serde_json::Value)> {
        loop {
            let block = self.next_block(wait).await?;
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                return Some((id, data));
            }
        }
    }
}
