//! Operators' routes on the admin listener, behind the admin token:
//!
//! - `POST /admin/search/reindex`: 202 `{"job": id}` when a rebuild is
//!   queued (follow it at `/admin/jobs/{id}`); 409 `reindex_running` when
//!   one is pending or running on any replica.
//!
//! Without a token configured the route answers 404, as if absent.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use common::config::Secret;
use common::problem::Problem;

use crate::App;
use crate::reindex::{self, Requested};

pub struct AdminToken(pub Option<Secret>);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/search/reindex", web::post().to(reindex));
}

fn authorise(token: &AdminToken, req: &HttpRequest) -> Result<(), Problem> {
    let Some(expected) = token
        .0
        .as_ref()
        .filter(|t| t.expose().len() >= common::auth::settings::MIN_SECRET_BYTES)
    else {
        return Err(Problem::no_route(req.method().as_str(), req.path()));
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(common::auth::bearer);
    match given {
        Some(given)
            if common::auth::same_secret(given.as_bytes(), expected.expose().as_bytes()) =>
        {
            Ok(())
        }
        Some(_) => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the admin token does not match",
        )),
        None => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin token is required",
        )),
    }
}

async fn reindex(
    app: web::Data<App>,
    token: web::Data<AdminToken>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    authorise(&token, &req)?;
    match reindex::request(&app).await {
        Ok(Requested::Queued(job)) => {
            Ok(HttpResponse::Accepted().json(json!({ "job": job.to_string() })))
        }
        Ok(Requested::AlreadyRunning(job)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "reindex_running",
            match job {
                Some(job) => format!("a reindex is already pending or running (job {job})"),
                None => "a reindex is already running on a replica".to_owned(),
            },
        )),
        Err(error) => {
            tracing::warn!(error = %common::exit::chain(&error), "cannot start a reindex");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the job queue or the lock service does not answer; try again",
            ))
        }
    }
}
