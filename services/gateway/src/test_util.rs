//! Typed helpers for tests that run this service (feature `test-util`).

use std::sync::Arc;

use common::config::{Env, ServiceConfig};
use common::discovery::{Registry, StaticRegistry};
use common::service::Shared;
use test_support::TestHost;

use crate::Config;

/// The key test tokens are signed with.
pub const SIGNING_KEY: &str = "0123456789abcdef0123456789abcdef-test";

/// Settings that make tests quick and deterministic: a known signing key,
/// short timeouts, a breaker that opens after a few failures, limits high
/// enough that only rate-limit tests meet them. `vars` override them.
pub const TEST_VARS: [(&str, &str); 5] = [
    ("GATEWAY_JWT_SECRET", SIGNING_KEY),
    ("GATEWAY_UPSTREAM_TIMEOUT", "2s"),
    ("GATEWAY_BREAKER_MIN_CALLS", "4"),
    ("GATEWAY_BREAKER_OPEN_FOR", "1s"),
    ("GATEWAY_RATE_LIMIT_REQUESTS", "10000"),
];

/// The gateway on a random loopback port.
pub struct TestApp {
    pub host: TestHost,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The admin listener: `/metrics`, `/admin/*`.
    pub admin: String,
    /// Where the gateway finds upstreams; tests register theirs here.
    pub registry: Arc<dyn Registry>,
}

impl TestApp {
    pub async fn stop(self) {
        self.host.stop().await;
    }
}

/// Starts the gateway with [`TEST_VARS`] and `vars` (later wins), finding
/// upstreams in `shared`'s registry (a new, empty static one when it has
/// none).
pub async fn spawn_app(vars: &[(&str, &str)], shared: &Shared) -> TestApp {
    let mut all = TEST_VARS.to_vec();
    all.extend_from_slice(vars);
    let mut config = Config::from_source(&Env::from_map(crate::config::ENV_PREFIX, all))
        .expect("the test configuration is valid");
    config.service = ServiceConfig::ephemeral(crate::config::DEFAULTS.name, false);
    let registry = shared
        .registry
        .clone()
        .unwrap_or_else(|| Arc::new(StaticRegistry::new(Vec::new())));
    let shared = shared.clone().with_registry(registry.clone());
    let builder = crate::build(config, &shared)
        .await
        .unwrap_or_else(|e| panic!("the gateway must start: {}", common::exit::chain(&e)));
    let host = TestHost::spawn(builder);
    TestApp {
        base: host.http_url(),
        admin: host.admin_url(),
        host,
        registry,
    }
}
