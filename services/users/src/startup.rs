//! Connects the service's backends and puts its API on a host.

use std::sync::Arc;

use async_trait::async_trait;
use common::auth::ADMIN_CALLER;
use common::cache::{MultilevelCache, RedisConnectError, RedisLevel};
use common::events::EventBusError;
use common::health::ReadinessCheck;
use common::server::{ServerError, ServiceHostBuilder};
use common::service::Shared;
use platform_proto::posts::v1::comment_service_server::CommentServiceServer;
use platform_proto::posts::v1::post_service_server::PostServiceServer;
use platform_proto::users::v1::user_service_server::UserServiceServer;

use crate::config::Config;
use crate::grpc;
use crate::outbox::OutboxRelay;
use crate::password::Hasher;
use crate::store::{Store, StoreError};
use crate::views::Views;

/// Largest gRPC message accepted; the largest valid request (a post of
/// 20,000 characters) is far below it.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the users database")]
    Store(#[from] StoreError),
    #[error("cannot connect to the event bus")]
    Events(#[from] EventBusError),
    #[error("cannot connect the cache to Redis")]
    Redis(#[from] RedisConnectError),
    #[error(transparent)]
    Host(#[from] ServerError),
}

struct DatabaseCheck(Store);

#[async_trait]
impl ReadinessCheck for DatabaseCheck {
    fn name(&self) -> &str {
        "database"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| common::exit::chain(&e))
    }
}

/// The service's gRPC API, readiness checks and background work on a
/// host, not yet bound.
pub async fn build(config: Config, shared: &Shared) -> Result<ServiceHostBuilder, StartError> {
    let store = Store::connect_with(
        config.database_url.expose(),
        config.database_max_connections,
        config.database_timeouts,
    )
    .await?;
    let redis = match &config.redis_url {
        Some(url) => Some(RedisLevel::connect(url.expose(), &config.redis).await?),
        None => None,
    };
    let cache = MultilevelCache::new(config.cache, redis).await;
    let views = Views::new(store.clone(), cache);
    let bus = shared.event_bus_or(&config.events)?;
    let relay = OutboxRelay::new(store.clone(), bus, config.relay);
    let builder = shared
        .host(config.service)
        .grpc_reflection(platform_proto::FILE_DESCRIPTOR_SET)?
        // Sign-in is the gateway's; bulk reads feed search; rebuilding the
        // read models is an operator's act.
        .grpc_allow("/users.v1.UserService/VerifyCredentials", &["gateway"])
        // Usernames to ids, for the events that name users.
        .grpc_allow(
            "/users.v1.UserService/LookupUsername",
            &["notifications", ADMIN_CALLER],
        )
        .grpc_allow(
            "/users.v1.UserService/ExportUsers",
            &["search", ADMIN_CALLER],
        )
        .grpc_allow(
            "/users.v1.UserService/ExportEvents",
            &["search", ADMIN_CALLER],
        )
        .grpc_allow("/users.v1.UserService/RebuildReadModels", &[ADMIN_CALLER])
        .grpc_allow("/users.v1.UserService/RetryParkedEvents", &[ADMIN_CALLER])
        .readiness_check(Arc::new(DatabaseCheck(store.clone())))
        .task("outbox-relay", move |stop| relay.run(stop))
        .grpc_service(
            UserServiceServer::new(grpc::UserApi::new(
                store.clone(),
                views.clone(),
                Hasher::new(config.hashing),
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .grpc_service(
            PostServiceServer::new(grpc::PostApi::new(store.clone(), views))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .grpc_service(
            CommentServiceServer::new(grpc::CommentApi::new(store))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
    // Redis is not a readiness check: the cache answers without it (from
    // L1, disk and the database), and a shared cache that is down must not
    // take every replica out of the Service at once.
    Ok(builder)
}
