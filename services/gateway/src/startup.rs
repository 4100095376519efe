//! Builds the gateway: upstreams found through discovery, the rate
//! limiter, and every route on a host.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use common::redis::RedisConnectError;
use common::server::ServiceHostBuilder;
use common::service::Shared;
use resilience::clock::SystemClock;
use resilience::rate_limit::MemoryLimiter;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::jwt::{MemoryTokenStore, TokenStore};
use crate::ratelimit::{DynamicRateLimiter, WorkerRedis};
use crate::routes::admin::AdminToken;
use crate::upstream::Upstream;
use crate::{Gateway, chat, cors, proxy, ratelimit, request, routes, versioning};
use common::auth::store::RedisTokenStore;

/// How soon an override set on one replica applies on the others.
const OVERRIDE_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Redis(#[from] RedisConnectError),
}

/// A worker's own Redis client: the gateway starts even while Redis is
/// down and limits in process until it answers.
fn redis_client(
    (config, options): (fred::prelude::Config, common::redis::RedisOptions),
) -> Option<fred::prelude::Client> {
    match common::redis::background_client(config, &options) {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::error!(%error, "rate limits stay in process");
            None
        }
    }
}

/// The gateway's routes on a host, not yet bound, finding upstreams in the
/// shared registry or the configured one.
pub async fn build(config: Config, shared: &Shared) -> Result<ServiceHostBuilder, StartError> {
    let registry = shared.registry_or(&config.service.discovery);
    let clock = Arc::new(SystemClock);
    let signer = config.tokens.signer();
    // Parsed here so a bad URL (or a cluster none of whose seeds answers)
    // stops the start; each worker then makes its own rate-limit client
    // from it.
    if let Some(url) = &config.redis_url {
        common::redis::check_cluster_seeds(url.expose(), &config.redis).await?;
    }
    let redis = config
        .redis_url
        .as_ref()
        .map(|url| common::redis::parse(url.expose()))
        .transpose()?
        .map(|parsed| (parsed, config.redis));
    // One client for what every replica shares besides the limiter's
    // counts: the token store and the limit overrides.
    let shared_redis = redis.clone().and_then(redis_client);
    let store: Arc<dyn TokenStore> = match shared_redis.clone() {
        Some(client) => Arc::new(RedisTokenStore::new(client)),
        None => Arc::new(MemoryTokenStore::default()),
    };
    let authenticator = Authenticator {
        signer: signer.clone(),
        store,
    };
    let gateway = web::Data::new(Gateway {
        users: Upstream::new(
            "users",
            registry.as_ref(),
            config.breaker.clone(),
            clock,
            config.upstream_timeout,
        )
        .with_connect_timeout(config.upstream_connect_timeout)
        .with_limits(config.concurrency)
        .with_credentials(config.service.service_auth.credentials()),
        search: Upstream::new(
            "search",
            registry.as_ref(),
            config.breaker.clone(),
            Arc::new(SystemClock),
            config.upstream_timeout,
        )
        .with_connect_timeout(config.upstream_connect_timeout)
        .with_limits(config.concurrency)
        .with_credentials(config.service.service_auth.credentials()),
        auth: authenticator.clone(),
        limits: crate::AttemptLimits {
            login: config.login_quota,
            signup: config.signup_quota,
        },
        ticket_ttl: config.ticket_ttl,
    });
    let authenticator = web::Data::new(authenticator);
    let signer = web::Data::from(signer);
    let max_body = config.max_body_bytes;
    let connect_timeout = config.upstream_connect_timeout;
    let mut limiter = DynamicRateLimiter::new(
        config.rate_limit,
        MemoryLimiter::new(Arc::new(SystemClock)),
        config.on_redis_error,
    );
    let shares_overrides = shared_redis.is_some();
    if let Some(client) = shared_redis {
        limiter = limiter.with_shared_overrides(client);
    }
    let limiter = Arc::new(limiter);
    // In process the copy is the truth: nothing to reload.
    if shares_overrides {
        tokio::spawn(ratelimit::refresh_overrides(
            Arc::downgrade(&limiter),
            OVERRIDE_REFRESH,
        ));
    }
    let limiter = web::Data::new(limiter);
    let admin = web::Data::new(AdminToken(config.admin_token.clone()));
    let sunset = web::Data::new(versioning::V1Sunset(config.v1_sunset.clone()));
    let trusted = web::Data::new(config.trusted_proxies.clone());
    let cors_origins = web::Data::new(config.cors_origins.clone());
    let passthrough_routes: Vec<(String, Arc<Upstream>)> = config
        .passthrough
        .iter()
        .map(|(prefix, service)| {
            let upstream = Upstream::new(
                service,
                registry.as_ref(),
                config.breaker.clone(),
                Arc::new(SystemClock),
                config.upstream_timeout,
            );
            (prefix.clone(), Arc::new(upstream))
        })
        .collect();
    let chat_upstream = Arc::new(Upstream::new(
        "chat",
        registry.as_ref(),
        config.breaker.clone(),
        Arc::new(SystemClock),
        config.upstream_timeout,
    ));
    let notifications_upstream = Arc::new(Upstream::new(
        "notifications",
        registry.as_ref(),
        config.breaker.clone(),
        Arc::new(SystemClock),
        config.upstream_timeout,
    ));
    let closing = chat::Closing(common::shutdown::CancellationToken::new());
    // One cap for the whole process, whichever worker the upgrade lands on.
    let ws_limits = chat::WsLimits::new(
        config.websockets.max_open,
        config.websockets.queue,
        config.websockets.send_timeout,
        config.max_body_bytes,
    );
    let admin_limiter = limiter.clone();
    let admin_redis = redis.clone();
    Ok(shared
        .host(config.service)
        .on_drain(closing.0.clone())
        // Operators only: on the admin listener, never the public port.
        .admin(move |cfg| {
            cfg.app_data(admin.clone())
                .app_data(admin_limiter.clone())
                .app_data(web::Data::new(WorkerRedis::new(
                    admin_redis.clone().and_then(redis_client),
                )));
            routes::admin::configure(cfg);
        })
        .http(move |cfg| {
            cfg.app_data(gateway.clone())
                .app_data(signer.clone())
                .app_data(authenticator.clone())
                .app_data(limiter.clone())
                .app_data(sunset.clone())
                .app_data(trusted.clone())
                .app_data(cors_origins.clone())
                // Runs once per worker: each gets its own upstream client
                // and Redis connection.
                .app_data(web::Data::new(proxy::Passthrough::for_this_worker(
                    connect_timeout,
                )))
                .app_data(web::Data::new(WorkerRedis::new(
                    redis.clone().and_then(redis_client),
                )));
            // Before the REST scopes: a scope that matches a prefix answers
            // 404 itself rather than passing the request on.
            for (prefix, upstream) in &passthrough_routes {
                // A scope matches its prefix without a regex, and carries
                // its upstream, so a request needs no route lookup.
                cfg.service(
                    web::scope(prefix)
                        .app_data(web::Data::new(upstream.clone()))
                        .wrap(actix_web::middleware::from_fn(ratelimit::limit_rate))
                        .wrap(actix_web::middleware::from_fn(request::request_id))
                        .wrap(actix_web::middleware::from_fn(cors::cors))
                        .default_service(web::to(proxy::forward)),
                );
            }
            chat::configure(
                cfg,
                chat_upstream.clone(),
                closing.clone(),
                ws_limits.clone(),
            );
            crate::notifications::configure(cfg, notifications_upstream.clone());
            routes::extractor_config(cfg, max_body);
            routes::configure(cfg);
        }))
}
