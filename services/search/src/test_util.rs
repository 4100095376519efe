//! Typed helpers for tests that run this service (feature `test-util`).

use std::sync::Arc;

use common::config::{Env, ServiceConfig};
use common::events::{EventBus, MemoryBus};
use common::service::Shared;
use test_support::{TempDir, TestHost};

use crate::Config;

/// The admin token test services are started with.
pub const ADMIN_TOKEN: &str = "a search test admin token of 32+ bytes";

/// The service on random loopback ports, on an index and a job database
/// of its own (unless `vars` name others) and an in-process bus the test
/// can publish to.
pub struct TestApp {
    pub host: TestHost,
    pub bus: Arc<MemoryBus>,
    _dir: TempDir,
}

impl TestApp {
    /// Stops the service, asserting a clean exit.
    pub async fn stop(self) {
        self.host.stop().await;
    }
}

/// Starts the service with `vars` (`SEARCH_*`) over the defaults; on `bus`
/// if given, else on a new in-process one.
pub async fn spawn_app(
    vars: &[(&str, &str)],
    shared: &Shared,
    bus: Option<Arc<MemoryBus>>,
) -> TestApp {
    let dir = TempDir::new("search-test");
    let index = dir.path().join("index").display().to_string();
    let database = format!("sqlite://{}/jobs.db", dir.path().display());
    let mut all = vec![
        ("SEARCH_ADMIN_TOKEN", ADMIN_TOKEN),
        ("SEARCH_BATCH_WAIT", "5ms"),
    ];
    for (key, value) in [
        ("SEARCH_INDEX_URL", index.as_str()),
        ("SEARCH_DATABASE_URL", database.as_str()),
    ] {
        if !vars.iter().any(|(k, _)| *k == key) {
            all.push((key, value));
        }
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
        .unwrap_or_else(|e| panic!("search must start: {}", common::exit::chain(&e)));
    TestApp {
        host: TestHost::spawn(builder),
        bus,
        _dir: dir,
    }
}
