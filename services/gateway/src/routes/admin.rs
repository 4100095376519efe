//! Operator endpoints on the admin listener (`GATEWAY_ADMIN_ADDR`, never
//! the public port), behind `Authorization: Bearer <GATEWAY_ADMIN_TOKEN>`
//! (absent token: the endpoints do not exist). Run-time rate-limit
//! overrides per client key, applied by the `DynamicRateLimiter`.

use common::json::JsonObject;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use resilience::rate_limit::Quota;
use serde::{Deserialize, Serialize};

use crate::problem::ApiError;
use crate::ratelimit::{DynamicRateLimiter, WorkerRedis};

/// The configured admin token, if admin endpoints are enabled.
#[derive(Clone)]
pub struct AdminToken(pub Option<common::config::Secret>);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .route("/rate-limits", web::get().to(list))
            .route("/rate-limits/{key}", web::put().to(set))
            .route("/rate-limits/{key}", web::delete().to(remove)),
    );
}

fn authorize(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(expected) = req
        .app_data::<web::Data<AdminToken>>()
        .and_then(|t| t.0.clone())
    else {
        return Err(ApiError::NotFound(format!(
            "no route for {} {}",
            req.method(),
            req.path()
        )));
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(common::auth::bearer)
        .ok_or_else(|| ApiError::Unauthorized("the admin token is required".into()))?;
    if common::auth::same_secret(given.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        tracing::warn!(path = %req.path(), "admin call with a wrong token refused");
        Err(ApiError::Forbidden("the admin token is not valid".into()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    limit: u32,
    period_seconds: u64,
}

#[derive(Serialize)]
struct OverrideView {
    key: String,
    limit: u32,
    period_seconds: u64,
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    let ok = key.len() <= 200
        && (key.starts_with("user:") || key.starts_with("ip:"))
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_key",
            "keys are user:<id> or ip:<address>",
        ))
    }
}

async fn set(
    req: HttpRequest,
    limiter: web::Data<Arc<DynamicRateLimiter>>,
    redis: web::Data<WorkerRedis>,
    key: web::Path<String>,
    body: JsonObject<OverrideBody>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req)?;
    validate_key(&key)?;
    if !(1..=1_000_000).contains(&body.limit) || !(1..=86_400).contains(&body.period_seconds) {
        return Err(ApiError::bad_request(
            "invalid_quota",
            "limit must be 1 to 1,000,000 and period_seconds 1 to 86,400",
        ));
    }
    let quota = Quota {
        limit: body.limit,
        period: Duration::from_secs(body.period_seconds),
    };
    limiter
        .set_override(&redis, &key, quota)
        .await
        .map_err(overrides_unavailable)?;
    tracing::info!(key = %key, limit = body.limit, period_seconds = body.period_seconds, "rate limit override set");
    Ok(HttpResponse::Ok().json(OverrideView {
        key: key.into_inner(),
        limit: body.limit,
        period_seconds: body.period_seconds,
    }))
}

fn overrides_unavailable(error: crate::ratelimit::OverrideError) -> ApiError {
    tracing::warn!(%error, "rate limit override not changed");
    ApiError::Unavailable {
        service: "rate limit overrides".into(),
        retry_after: Duration::from_secs(1),
    }
}

async fn remove(
    req: HttpRequest,
    limiter: web::Data<Arc<DynamicRateLimiter>>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req)?;
    if limiter
        .remove_override(&key)
        .await
        .map_err(overrides_unavailable)?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("no override for {key}")))
    }
}

async fn list(
    req: HttpRequest,
    limiter: web::Data<Arc<DynamicRateLimiter>>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req)?;
    let mut overrides: Vec<OverrideView> = limiter
        .overrides()
        .into_iter()
        .map(|(key, q)| OverrideView {
            key,
            limit: q.limit,
            period_seconds: q.period.as_secs(),
        })
        .collect();
    overrides.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "overrides": overrides })))
}
