//! Typed helpers for tests that run this service (feature `test-util`).

use common::config::ServiceConfig;
use common::service::Shared;
use test_support::TestHost;

use crate::Config;

/// The service on random loopback ports with its embedded backends.
pub async fn spawn_app(shared: &Shared) -> TestHost {
    let config = Config {
        service: ServiceConfig::ephemeral(crate::config::DEFAULTS.name, true),
    };
    let builder = crate::build(config, shared)
        .await
        .unwrap_or_else(|e| panic!("notifications must start: {}", common::exit::chain(&e)));
    TestHost::spawn(builder)
}
