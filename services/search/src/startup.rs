//! Connects the service's backends and puts its API on a host.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use async_trait::async_trait;
use common::events::EventBusError;
use common::health::ReadinessCheck;
use common::jobs::{SqlJobStore, Workers, handler_fn};
use common::lock::{Locks, RedisLocks};
use common::server::ServiceHostBuilder;
use common::service::Shared;
use platform_proto::search::v1::search_service_server::SearchServiceServer;

use crate::config::{Config, IndexBackend};
use crate::consumer::{self, Batching};
use crate::index::{Embedded, Index, IndexError, OpenSearch, OpenSearchSettings, SearchIndex};
use crate::{App, grpc, reindex, routes};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the search index")]
    Index(#[from] IndexError),
    #[error("cannot reach the event bus")]
    Bus(#[source] EventBusError),
    #[error("cannot open the job database")]
    Database(#[from] common::db::DbError),
    #[error("cannot open the job queue")]
    Jobs(#[from] common::jobs::JobError),
    #[error("cannot set the reindex lock up on Redis")]
    Redis(#[from] common::redis::RedisConnectError),
    #[error(transparent)]
    Server(#[from] common::server::ServerError),
}

struct IndexCheck(Arc<dyn SearchIndex>);

#[async_trait]
impl ReadinessCheck for IndexCheck {
    fn name(&self) -> &str {
        self.0.backend()
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

/// OpenSearch's alias and first index, made once the cluster answers: a
/// service started while it is down comes up and creates them later.
fn ensure_in_background(index: OpenSearch) {
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(500);
        loop {
            match index.ensure_index().await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot create the search index yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    });
}

async fn open_index(config: &Config) -> Result<Arc<dyn SearchIndex>, StartError> {
    Ok(match &config.index {
        IndexBackend::Embedded(dir) => {
            let dir = dir.clone();
            let keep_alive = config.cursor_keep_alive;
            let compact_every = config.compact_every;
            let embedded = tokio::task::spawn_blocking(move || {
                Embedded::open_with(dir, keep_alive, compact_every)
            })
            .await
            .map_err(|e| IndexError::Backend(e.to_string()))??;
            Arc::new(embedded)
        }
        IndexBackend::OpenSearch(url) => {
            let opensearch = OpenSearch::new(OpenSearchSettings {
                url: url.expose().to_owned(),
                index: config.index_name.clone(),
                shards: config.shards,
                replicas: config.replicas,
                timeout: config.opensearch_timeout,
                keep_alive: config.cursor_keep_alive,
            })?;
            if let Err(error) = opensearch.ensure_index().await {
                tracing::warn!(%error, "cannot create the search index yet");
                ensure_in_background(opensearch.clone());
            }
            Arc::new(opensearch)
        }
    })
}

/// From the service secret, so every replica reads every replica's
/// cursors; without one (only a derived key was given), this process's
/// own.
fn cursor_key(config: &Config) -> crate::query::CursorKey {
    let secret = config
        .service
        .service_auth
        .secret
        .clone()
        .unwrap_or_else(common::auth::ServiceSecret::random);
    crate::query::CursorKey::new(secret.key_for("search.cursor").encode().as_bytes())
}

/// The service's gRPC API, consumer, reindex job and admin route on a
/// host, not yet bound.
pub async fn build(config: Config, shared: &Shared) -> Result<ServiceHostBuilder, StartError> {
    let live = open_index(&config).await?;
    let bus = shared
        .event_bus_or(&config.events)
        .map_err(StartError::Bus)?;
    let (pool, _) = common::db::connect(
        config.database_url.expose(),
        config.database_max_connections,
        config.database_timeouts,
        common::db::Migrations {
            postgres: &[],
            sqlite: &[],
        },
    )
    .await?;
    let jobs = config
        .jobs
        .open(Arc::new(SqlJobStore::new(pool).await?), shared)
        .await?;
    let locks = match &config.redis_url {
        Some(url) => {
            let (client, _) = common::redis::connect_in_background(url.expose(), &config.redis)?;
            Locks::new(Arc::new(RedisLocks::new(client, "search:locks:")))
        }
        None => Locks::in_process(),
    };
    let app = Arc::new(App {
        index: Index::new(live.clone()),
        jobs: jobs.clone(),
        locks,
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
        metrics: grpc::QueryMetrics::default(),
        cursor_key: cursor_key(&config),
    });
    let job_app = app.clone();
    let workers = Workers::new().register(
        reindex::JOB_KIND,
        handler_fn(move |job| {
            let app = job_app.clone();
            Box::pin(async move { reindex::run(app, &job).await })
        }),
        1,
    );
    let batching = Batching {
        size: config.batch_size,
        wait: config.batch_wait,
    };
    let group = config.consumer_group.clone();
    let (posts_app, posts_bus, posts_group) = (app.clone(), bus.clone(), group.clone());
    let data = web::Data::from(app.clone());
    let token = web::Data::new(routes::AdminToken(config.admin_token.clone()));
    let grpc_app = app.clone();
    Ok(shared
        .host(config.service)
        .grpc_reflection(platform_proto::FILE_DESCRIPTOR_SET)?
        // The public door asks; operators may too.
        .grpc_allow(
            "/search.v1.SearchService/",
            &["gateway", common::auth::ADMIN_CALLER],
        )
        .readiness_check(Arc::new(IndexCheck(live)))
        .jobs(jobs, workers, config.admin_token)
        .admin(move |cfg| {
            cfg.app_data(data.clone()).app_data(token.clone());
            routes::configure(cfg);
        })
        .task("users-events", move |stop| {
            consumer::run(app, bus, consumer::USERS_TOPIC, group, batching, stop)
        })
        .task("posts-events", move |stop| {
            consumer::run(
                posts_app,
                posts_bus,
                consumer::POSTS_TOPIC,
                posts_group,
                batching,
                stop,
            )
        })
        .grpc_service(SearchServiceServer::new(grpc::SearchApi::new(grpc_app))))
}
