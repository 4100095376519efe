//! Connects the service's backends and puts its API on a host.

use common::server::ServiceHostBuilder;
use common::service::Shared;

use crate::config::Config;

/// Why the service could not start. Each backend the service connects to
/// adds a variant naming it (see the users service).
#[derive(Debug, thiserror::Error)]
pub enum StartError {}

/// The service's routes, gRPC services, readiness checks and background
/// tasks on a host, not yet bound.
pub async fn build(config: Config, shared: &Shared) -> Result<ServiceHostBuilder, StartError> {
    Ok(shared.host(config.service))
}
