//! Typed helpers for tests that run this service (feature `test-util`).

use std::sync::Arc;
use std::time::Duration;

use common::auth::{TokenPolicy, TokenSigner, TokenUse};
use common::config::{Env, ServiceConfig};
use common::events::{EventBus, MemoryBus};
use common::service::Shared;
use test_support::TestHost;

use crate::Config;

/// The key test tokens are signed with (chat only verifies them).
pub const SIGNING_KEY: &str = "a chat test signing key, 32 bytes";

/// Chat on random loopback ports, publishing to an in-process bus the test
/// can read.
pub struct TestApp {
    pub host: TestHost,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `ws://127.0.0.1:<port>/ws`.
    pub ws: String,
    pub bus: Arc<MemoryBus>,
}

impl TestApp {
    /// Stops the service, asserting a clean exit.
    pub async fn stop(self) {
        self.host.stop().await;
    }
}

/// An access token for user `id`, as the gateway would issue it.
pub fn token(id: u64, name: &str) -> String {
    token_for(id, name, Duration::from_secs(600))
}

/// An access token for user `id` that lives `ttl`.
pub fn token_for(id: u64, name: &str, ttl: Duration) -> String {
    signed_with(SIGNING_KEY, id, name, ttl)
}

/// An access token signed with `key`, under the default policy.
pub fn signed_with(key: &str, id: u64, name: &str, ttl: Duration) -> String {
    let policy = TokenPolicy {
        access_ttl: ttl,
        ..TokenPolicy::default()
    };
    TokenSigner::hs256(key.as_bytes(), policy)
        .and_then(|signer| signer.issue(id, name, TokenUse::Access, None))
        .map(|issued| issued.token)
        .expect("a test token can be signed")
}

/// Starts chat with `vars` (`CHAT_*`) over the defaults and
/// [`SIGNING_KEY`]. Uses `shared`'s registry when it has one; its own
/// in-process bus always, so the test sees what chat publishes.
pub async fn spawn_app(vars: &[(&str, &str)], shared: &Shared) -> TestApp {
    let mut all = vec![("CHAT_JWT_SECRET", SIGNING_KEY)];
    all.extend_from_slice(vars);
    let mut config = Config::from_source(&Env::from_map(
        crate::config::ENV_PREFIX,
        all.iter().copied(),
    ))
    .expect("the test configuration is valid");
    config.service = ServiceConfig::ephemeral(crate::config::DEFAULTS.name, false);
    let bus = Arc::new(MemoryBus::default());
    let shared = shared.clone().with_events(bus.clone() as Arc<dyn EventBus>);
    let builder = crate::build(config, &shared)
        .await
        .unwrap_or_else(|e| panic!("chat must start: {}", common::exit::chain(&e)));
    let host = TestHost::spawn(builder);
    TestApp {
        base: host.http_url(),
        ws: format!("ws://{}/ws", host.http_addr()),
        host,
        bus,
    }
}
