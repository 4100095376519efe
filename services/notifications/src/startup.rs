//! Connects the service's backends and puts its API on a host.

use std::sync::Arc;

use actix_web::web;
use async_trait::async_trait;
use common::events::EventBusError;
use common::health::ReadinessCheck;
use common::server::ServiceHostBuilder;
use common::service::Shared;

use crate::config::Config;
use crate::fanout::Fanout;
use crate::store::{Store, StoreError};
use crate::{App, consumer, digest, routes, webhooks};
use common::jobs::{NewJob, Schedule, SqlJobStore, Workers, handler_fn};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot reach the event bus")]
    Bus(#[source] EventBusError),
    #[error("cannot connect live delivery to Redis")]
    Redis(#[from] common::redis::RedisConnectError),
    #[error("cannot open the job queue")]
    Jobs(#[from] common::jobs::JobError),
}

struct DatabaseCheck(Store);

#[async_trait]
impl ReadinessCheck for DatabaseCheck {
    fn name(&self) -> &str {
        match self.0.backend() {
            common::db::Backend::Postgres => "postgres",
            common::db::Backend::Sqlite => "sqlite",
        }
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| common::exit::chain(&e))
    }
}

/// The service's routes, readiness checks and consumer on a host, not yet
/// bound.
pub async fn build(config: Config, shared: &Shared) -> Result<ServiceHostBuilder, StartError> {
    let store = Store::connect(
        config.database_url.expose(),
        config.database_max_connections,
        config.database_timeouts,
    )
    .await?;
    let bus = shared
        .event_bus_or(&config.events)
        .map_err(StartError::Bus)?;
    let closing = tokio_util::sync::CancellationToken::new();
    let live = Arc::new(crate::live::Live::default());
    let fanout = match &config.redis_url {
        Some(url) => {
            Fanout::redis(
                url.expose(),
                &config.redis,
                config.redis_channel.clone(),
                live.clone(),
            )
            .await?
        }
        None => Fanout::Local(live.clone()),
    };
    let job_store = Arc::new(SqlJobStore::new(store.pool().clone()).await?);
    let jobs = config.jobs.open(job_store, shared).await?;
    let digest = Schedule::new(
        "notifications-digest",
        &config.digest_schedule,
        NewJob::new(digest::JOB_KIND, serde_json::Value::Null),
    )?;
    let app = Arc::new(App {
        store: store.clone(),
        live,
        fanout,
        signer: config.tokens.signer(),
        jobs: jobs.clone(),
        webhooks: config.webhooks.clone(),
        webhook_wake: tokio::sync::Notify::new(),
        users: crate::users::Users::new(
            &shared.registry_or(&config.service.discovery),
            config
                .service
                .service_auth
                .credentials()
                .interceptor("users"),
            common::clients::Timeouts {
                connect: config.users_timeout,
                request: config.users_timeout,
            },
        ),
        streams: config.streams,
        closing: closing.clone(),
    });
    let (send_app, digest_app, relay_app) = (app.clone(), app.clone(), app.clone());
    let workers = Workers::new()
        .register_with(
            webhooks::JOB_KIND,
            handler_fn(move |job| {
                let app = send_app.clone();
                Box::pin(async move { webhooks::send::run(app, &job).await })
            }),
            config.webhooks.concurrency,
            config.webhooks.backoff,
        )
        .register(
            digest::JOB_KIND,
            handler_fn(move |job| {
                let app = digest_app.clone();
                Box::pin(async move { digest::run(app, &job).await })
            }),
            1,
        )
        .schedule(digest);
    let data = web::Data::from(app.clone());
    let group = config.consumer_group;
    let (posts_app, posts_bus, posts_group) = (app.clone(), bus.clone(), group.clone());
    let (chat_app, chat_bus, chat_group) = (app.clone(), bus.clone(), group.clone());
    let (files_app, files_bus, files_group) = (app.clone(), bus.clone(), group.clone());
    Ok(shared
        .host(config.service)
        .on_drain(closing)
        .readiness_check(Arc::new(DatabaseCheck(store)))
        .jobs(jobs, workers, config.admin_token)
        .task("webhook-relay", move |stop| {
            webhooks::relay::run(relay_app, stop)
        })
        .task("users-events", move |stop| {
            consumer::run(app, bus, consumer::USERS_TOPIC, group, stop)
        })
        .task("posts-events", move |stop| {
            consumer::run(
                posts_app,
                posts_bus,
                consumer::POSTS_TOPIC,
                posts_group,
                stop,
            )
        })
        .task("chat-events", move |stop| {
            consumer::run(chat_app, chat_bus, consumer::CHAT_TOPIC, chat_group, stop)
        })
        .task("storage-events", move |stop| {
            consumer::run(
                files_app,
                files_bus,
                consumer::STORAGE_TOPIC,
                files_group,
                stop,
            )
        })
        .http(move |cfg| {
            cfg.app_data(data.clone());
            routes::configure(cfg);
        }))
}
