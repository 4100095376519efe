//! The operators' view of a service's jobs, on its admin listener (never
//! the public port), behind the service's admin token:
//!
//! - `GET /admin/jobs?state=dead&after=<id>&limit=50`: jobs oldest first,
//!   `{"jobs": [...], "next": <id or null>}`;
//! - `GET /admin/jobs/{id}`: one job;
//! - `POST /admin/jobs/{id}/retry`: a dead job runs again from its first
//!   attempt (`409 not_dead` otherwise);
//! - `POST /admin/jobs/{id}/discard`: a job that has not run to its end is
//!   set aside for good (`409 not_discardable` otherwise).
//!
//! Without a token configured the routes answer 404, as if absent.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::engine::JobQueue;
use super::model::{JobError, JobId, JobState};
use crate::config::Secret;
use crate::problem::Problem;

/// Most jobs one listing returns.
pub const MAX_PAGE: usize = 500;

#[derive(Clone)]
struct JobsAdmin {
    queue: JobQueue,
    token: Option<Secret>,
}

/// The routes for `queue`, enabled by `token` (at least
/// [`crate::auth::settings::MIN_SECRET_BYTES`]; a shorter one leaves them disabled).
pub fn routes(
    queue: JobQueue,
    token: Option<Secret>,
) -> impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static {
    let token = token.filter(|t| {
        let long_enough = t.expose().len() >= crate::auth::settings::MIN_SECRET_BYTES;
        if !long_enough {
            tracing::error!(
                "the admin token is shorter than {} bytes: the job routes stay disabled",
                crate::auth::settings::MIN_SECRET_BYTES
            );
        }
        long_enough
    });
    let admin = web::Data::new(JobsAdmin { queue, token });
    move |cfg| {
        cfg.service(
            web::scope("/admin/jobs")
                .app_data(admin.clone())
                .route("", web::get().to(list))
                .route("/{id}", web::get().to(get))
                .route("/{id}/retry", web::post().to(retry))
                .route("/{id}/discard", web::post().to(discard)),
        );
    }
}

fn authorise(admin: &JobsAdmin, req: &HttpRequest) -> Result<(), Problem> {
    let Some(expected) = &admin.token else {
        return Err(Problem::no_route(req.method().as_str(), req.path()));
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin token is required",
            )
        })?;
    if crate::auth::same_secret(given.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin token is wrong",
        ))
    }
}

fn failed(error: &JobError) -> Problem {
    tracing::warn!(error = %crate::exit::chain(error), "job store unavailable");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the job store is unavailable",
    )
    .with_retry_after(std::time::Duration::from_secs(1))
}

fn job_id(raw: &str) -> Result<JobId, Problem> {
    raw.parse()
        .map_err(|_| Problem::new(StatusCode::NOT_FOUND, "not_found", format!("no job {raw}")))
}

fn not_found(id: JobId) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not_found", format!("no job {id}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

async fn list(req: HttpRequest, admin: web::Data<JobsAdmin>) -> Result<HttpResponse, Problem> {
    // The token first: nothing about the route shows without it.
    authorise(&admin, &req)?;
    let bad = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "bad_query", detail);
    let query =
        web::Query::<ListQuery>::from_query(req.query_string()).map_err(|e| bad(e.to_string()))?;
    let state = query
        .state
        .as_deref()
        .map(str::parse::<JobState>)
        .transpose()
        .map_err(bad)?;
    let after = query
        .after
        .as_deref()
        .map(|a| {
            a.parse::<JobId>()
                .map_err(|_| bad(format!("after={a} is not a job id")))
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad(format!("limit is 1 to {MAX_PAGE}")));
    }
    let jobs = admin
        .queue
        .list(state, after, limit)
        .await
        .map_err(|e| failed(&e))?;
    let next = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.id))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({ "jobs": jobs, "next": next })))
}

async fn get(
    req: HttpRequest,
    admin: web::Data<JobsAdmin>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    authorise(&admin, &req)?;
    let id = job_id(&id)?;
    match admin.queue.get(id).await.map_err(|e| failed(&e))? {
        Some(job) => Ok(HttpResponse::Ok().json(job)),
        None => Err(not_found(id)),
    }
}

async fn retry(
    req: HttpRequest,
    admin: web::Data<JobsAdmin>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    authorise(&admin, &req)?;
    let id = job_id(&id)?;
    match admin.queue.retry(id).await {
        Ok(Some(job)) => {
            tracing::info!(job = %id, "dead job retried by an operator");
            Ok(HttpResponse::Ok().json(job))
        }
        Ok(None) => {
            Err(conflict_or_missing(&admin, id, "not_dead", "only a dead job is retried").await)
        }
        Err(error) => Err(failed(&error)),
    }
}

async fn discard(
    req: HttpRequest,
    admin: web::Data<JobsAdmin>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    authorise(&admin, &req)?;
    let id = job_id(&id)?;
    match admin.queue.discard(id).await {
        Ok(true) => {
            tracing::info!(job = %id, "job discarded by an operator");
            Ok(HttpResponse::NoContent().finish())
        }
        Ok(false) => Err(conflict_or_missing(
            &admin,
            id,
            "not_discardable",
            "a job that succeeded, is running or was discarded stays as it is",
        )
        .await),
        Err(error) => Err(failed(&error)),
    }
}

async fn conflict_or_missing(
    admin: &JobsAdmin,
    id: JobId,
    code: &'static str,
    detail: &'static str,
) -> Problem {
    match admin.queue.get(id).await {
        Ok(Some(_)) => Problem::new(StatusCode::CONFLICT, code, detail),
        Ok(None) => not_found(id),
        Err(error) => failed(&error),
    }
}
