//! Per-client rate limiting with run-time overrides (`DynamicRateLimiter`).
//!
//! Each request is charged to a key, `user:<id>` for a valid bearer token
//! and `ip:<address>` otherwise (see [`crate::client_addr`]), against a default quota or a per-key
//! override set at run time through the admin API. Decisions are GCRA
//! (no burst at window edges), made atomically in Redis when configured so
//! every gateway replica shares the count, else in process. Concurrent
//! requests from one client share a Redis round trip (one script decides
//! the whole batch, in order; see `Coalescing`). When Redis
//! fails, the configured [`OnRedisError`] policy applies and the
//! `gateway_ratelimit_redis_errors_total` counter says so.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, ResponseError, web};
use resilience::fail_fast::FailFast;
use resilience::rate_limit::{
    Coalescing, Decision, MemoryLimiter, Quota, RateLimiter, RedisLimiter,
};

use crate::jwt::TokenSigner;
use crate::problem::ApiError;

/// What to do while Redis does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRedisError {
    /// Limit in process, per replica (the default).
    Local,
    /// Let every request through.
    Open,
    /// Refuse every request with 503.
    Closed,
}

/// Where overrides live in Redis: one hash, `key → "<limit>/<period ms>"`.
const OVERRIDES_KEY: &str = "ratelimit:overrides";

/// The overrides could not be stored where every replica reads them.
#[derive(Debug, thiserror::Error)]
#[error("cannot store the override in Redis: {0}")]
pub struct OverrideError(String);

pub struct DynamicRateLimiter {
    default: Quota,
    /// This replica's copy; the Redis hash is the truth when shared.
    overrides: RwLock<HashMap<String, Quota>>,
    /// Shares overrides with every replica (none: this process only).
    shared: Option<fred::prelude::Client>,
    local: MemoryLimiter,
    on_redis_error: OnRedisError,
}

/// A worker thread's own Redis connection for rate-limit decisions (none
/// when limits are in process). One per worker, made on that worker: a
/// decision's round trip then stays on the thread serving the request,
/// where a shared client would hand each command to a connection task on
/// another thread and the answer back — two context switches per batch,
/// measured at a quarter of the pass-through's throughput.
///
/// Each has a [`FailFast`] guard: once Redis has failed a few decisions in
/// a row, decisions go straight to the [`OnRedisError`] policy without
/// waiting on Redis, until a background probe finds it again.
pub struct WorkerRedis(Option<(Coalescing<RedisLimiter>, FailFast)>);

impl WorkerRedis {
    pub fn new(client: Option<fred::prelude::Client>) -> Self {
        Self(client.map(|client| {
            let guard = common::redis::guard(&client, "ratelimit");
            (
                Coalescing::new(RedisLimiter::new(client, "ratelimit:")),
                guard,
            )
        }))
    }
}

pub enum Verdict {
    Decided(Decision),
    /// Fail-closed while Redis is down.
    Unavailable,
    /// Fail-open while Redis is down: no decision, no headers.
    Unlimited,
}

impl DynamicRateLimiter {
    pub fn new(default: Quota, local: MemoryLimiter, on_redis_error: OnRedisError) -> Self {
        Self {
            default,
            overrides: RwLock::new(HashMap::new()),
            shared: None,
            local,
            on_redis_error,
        }
    }

    /// Keeps overrides in Redis, where every replica finds them.
    pub fn with_shared_overrides(mut self, client: fred::prelude::Client) -> Self {
        self.shared = Some(client);
        self
    }

    /// Reloads the overrides every replica shares; the last copy stays
    /// while Redis does not answer.
    pub async fn refresh_overrides(&self) -> Result<(), OverrideError> {
        use fred::interfaces::HashesInterface as _;
        let Some(client) = &self.shared else {
            return Ok(());
        };
        let stored: HashMap<String, String> = client
            .hgetall(OVERRIDES_KEY)
            .await
            .map_err(|e| OverrideError(e.to_string()))?;
        let parsed = stored
            .into_iter()
            .filter_map(|(key, value)| {
                let (limit, period) = value.split_once('/')?;
                let quota = Quota {
                    limit: limit.parse().ok().filter(|l| *l > 0)?,
                    period: Duration::from_millis(period.parse().ok()?),
                };
                Some((key, quota))
            })
            .collect();
        *self.overrides.write().unwrap_or_else(|p| p.into_inner()) = parsed;
        Ok(())
    }

    /// Gives `key` its own quota from now on, on every replica, starting
    /// from a full bucket (a client already over the old limit would
    /// otherwise carry its debt, measured at the old rate, into the new
    /// one). Fails, changing nothing, when the shared store cannot take it.
    pub async fn set_override(
        &self,
        redis: &WorkerRedis,
        key: &str,
        quota: Quota,
    ) -> Result<(), OverrideError> {
        if let Some(client) = &self.shared {
            use fred::interfaces::HashesInterface as _;
            let value = format!("{}/{}", quota.limit, quota.period.as_millis());
            let _: () = client
                .hset(OVERRIDES_KEY, (key, value))
                .await
                .map_err(|e| OverrideError(e.to_string()))?;
        }
        self.overrides
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), quota);
        let _ = self.local.reset(key).await;
        if let Some((redis, _)) = &redis.0
            && let Err(error) = redis.reset(key).await
        {
            tracing::warn!(error = %common::exit::chain(&error), key, "could not reset the rate limit state in Redis");
        }
        Ok(())
    }

    /// Drops `key`'s override everywhere; whether it had one.
    pub async fn remove_override(&self, key: &str) -> Result<bool, OverrideError> {
        let mut removed = false;
        if let Some(client) = &self.shared {
            use fred::interfaces::HashesInterface as _;
            let count: u32 = client
                .hdel(OVERRIDES_KEY, key)
                .await
                .map_err(|e| OverrideError(e.to_string()))?;
            removed = count > 0;
        }
        let local = self
            .overrides
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
            .is_some();
        Ok(removed || local)
    }

    pub fn overrides(&self) -> HashMap<String, Quota> {
        self.overrides
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn quota(&self, key: &str) -> Quota {
        self.overrides
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(self.default)
    }

    pub async fn check(&self, redis: &WorkerRedis, key: &str) -> Verdict {
        self.check_quota(redis, key, self.quota(key)).await
    }

    /// Charges `key` against `quota`, whatever its override.
    pub async fn check_quota(&self, redis: &WorkerRedis, key: &str, quota: Quota) -> Verdict {
        let Some((redis, guard)) = &redis.0 else {
            return self.local_verdict(key, quota).await;
        };
        if !guard.allow() {
            return self.without_redis(key, quota).await;
        }
        match redis.check(key, quota).await {
            Ok(decision) => {
                guard.succeeded();
                Verdict::Decided(decision)
            }
            Err(error) => {
                metrics::counter!("gateway_ratelimit_redis_errors_total").increment(1);
                // Logged once by the guard when it gives up on Redis.
                guard.failed(&common::exit::chain(&error));
                self.without_redis(key, quota).await
            }
        }
    }

    async fn without_redis(&self, key: &str, quota: Quota) -> Verdict {
        match self.on_redis_error {
            OnRedisError::Local => self.local_verdict(key, quota).await,
            OnRedisError::Open => Verdict::Unlimited,
            OnRedisError::Closed => Verdict::Unavailable,
        }
    }

    async fn local_verdict(&self, key: &str, quota: Quota) -> Verdict {
        match self.local.check(key, quota).await {
            Ok(decision) => Verdict::Decided(decision),
            // The in-process limiter cannot fail.
            Err(_) => Verdict::Unlimited,
        }
    }
}

/// Keeps this replica's copy of the shared overrides fresh until the
/// limiter is gone.
pub async fn refresh_overrides(limiter: std::sync::Weak<DynamicRateLimiter>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        if let Err(error) = limiter.refresh_overrides().await {
            tracing::debug!(%error, "keeping the last copy of the rate-limit overrides");
        }
    }
}

/// This worker's Redis connection for decisions; in process without one.
fn worker_redis(req: &actix_web::HttpRequest) -> &WorkerRedis {
    const IN_PROCESS: WorkerRedis = WorkerRedis(None);
    req.app_data::<web::Data<WorkerRedis>>()
        .map_or(&IN_PROCESS, |r| r.get_ref())
}

/// The answer while Redis is down under `OnRedisError::Closed`.
fn limiter_unavailable() -> ApiError {
    ApiError::Unavailable {
        service: "rate limiter".into(),
        retry_after: Duration::from_secs(1),
    }
}

/// Charges one attempt at `what` (a sign-in to one account, a sign-up
/// with one email) against `quota`, on top of the per-client limit: many
/// addresses guessing one account's password, or probing one email, are
/// limited as one. The key is hashed, so no login or email sits in Redis.
pub async fn limit_attempts(
    req: &actix_web::HttpRequest,
    what: &str,
    subject: &str,
    quota: Quota,
) -> Result<(), ApiError> {
    use sha2::Digest;
    let Some(limiter) = req.app_data::<web::Data<Arc<DynamicRateLimiter>>>() else {
        return Ok(());
    };
    let redis = worker_redis(req);
    let digest = sha2::Sha256::digest(subject.trim().to_lowercase().as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let key = format!("{what}:{hex}");
    match limiter.check_quota(redis, &key, quota).await {
        Verdict::Decided(decision) if !decision.allowed => {
            metrics::counter!("gateway_attempt_rejections_total", "what" => what.to_owned())
                .increment(1);
            tracing::info!(what, "too many attempts for one subject");
            Err(ApiError::TooManyRequests {
                retry_after: decision.retry_after.unwrap_or(Duration::from_secs(1)),
            })
        }
        Verdict::Unavailable => Err(limiter_unavailable()),
        _ => Ok(()),
    }
}

/// The key a request is charged to.
fn client_key(req: &ServiceRequest) -> String {
    let user = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(common::auth::bearer)
        .zip(req.app_data::<web::Data<TokenSigner>>())
        .and_then(|(token, signer)| signer.verify(token).ok());
    match user {
        Some(claims) => format!("user:{}", claims.sub),
        None => crate::client_addr::client_ip(req.request())
            .map_or_else(|| "ip:unknown".to_owned(), crate::client_addr::limit_key),
    }
}

fn seconds(d: Duration) -> String {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).to_string()
}

fn set_headers(headers: &mut actix_web::http::header::HeaderMap, decision: &Decision) {
    let reset = seconds(decision.reset_after);
    let pairs = [
        ("x-ratelimit-limit", decision.limit.to_string()),
        ("x-ratelimit-remaining", decision.remaining.to_string()),
        ("x-ratelimit-reset", reset.clone()),
        ("ratelimit-limit", decision.limit.to_string()),
        ("ratelimit-remaining", decision.remaining.to_string()),
        ("ratelimit-reset", reset),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// Middleware: charges the request, answers 429 when over quota, and adds
/// the rate-limit headers to every response.
pub async fn limit_rate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let Some(limiter) = req
        .app_data::<web::Data<Arc<DynamicRateLimiter>>>()
        .cloned()
    else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let redis = worker_redis(req.request());
    let key = client_key(&req);
    let decision = match limiter.check(redis, &key).await {
        Verdict::Decided(decision) => decision,
        Verdict::Unlimited => return Ok(next.call(req).await?.map_into_left_body()),
        Verdict::Unavailable => {
            let error = limiter_unavailable();
            return Ok(req
                .into_response(error.error_response())
                .map_into_right_body());
        }
    };
    if !decision.allowed {
        metrics::counter!("gateway_ratelimit_rejections_total").increment(1);
        let error = ApiError::TooManyRequests {
            retry_after: decision.retry_after.unwrap_or(Duration::from_secs(1)),
        };
        let mut response: HttpResponse = error.error_response();
        set_headers(response.headers_mut(), &decision);
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    set_headers(response.headers_mut(), &decision);
    Ok(response.map_into_left_body())
}
