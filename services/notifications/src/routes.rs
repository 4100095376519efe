//! The REST API and the live stream, for the signed-in user only: every
//! route reads the user from the access token, and another user's
//! notification is a 404 like one that does not exist.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use common::problem::Problem;

use crate::App;
use crate::{preferences, sse};

/// The largest JSON body taken (a webhook URL, a preference).
const MAX_BODY_BYTES: usize = 8 * 1024;
use crate::store::StoreError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // A query that does not parse is a problem like any other.
    cfg.app_data(web::QueryConfig::default().error_handler(|error, _| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_query", error.to_string()).into()
    }));
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(|error, _| Problem::json_body(&error, MAX_BODY_BYTES).into()),
    );
    // The fixed paths first: `/{id}` would take them.
    let scope = web::scope("/api/v1/notifications")
        .route("", web::get().to(list))
        .route("/stream", web::get().to(sse::stream))
        .route("/unread-count", web::get().to(unread_count))
        .route("/read-all", web::post().to(read_all))
        .route("/preferences", web::get().to(preferences::get))
        .route("/preferences/{topic}", web::put().to(preferences::put));
    cfg.service(
        crate::webhooks::routes::configure(scope)
            .route("/{id}", web::get().to(get))
            .route("/{id}", web::delete().to(delete))
            .route("/{id}/read", web::post().to(read)),
    );
}

/// The signed-in user's id, from `Authorization: Bearer <access token>`.
pub(crate) fn user(req: &HttpRequest, app: &App) -> Result<i64, Problem> {
    session(req, app).map(|(user, _)| user)
}

/// The signed-in user's id and when their access token expires.
pub(crate) fn session(
    req: &HttpRequest,
    app: &App,
) -> Result<(i64, std::time::SystemTime), Problem> {
    let claims = common::auth::access_claims(req.headers(), &app.signer)?;
    let user = claims
        .user_id()
        .and_then(|id| i64::try_from(id).ok())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the access token is invalid or expired",
            )
        })?;
    Ok((user, claims.expires_at()))
}

pub(crate) fn unavailable(error: &StoreError) -> Problem {
    tracing::warn!(error = %common::exit::chain(error), "notifications store call failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "notifications are unavailable; try again shortly",
    )
}

fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "no such notification")
}

/// `path` as the positive id of a `what`, or a 400 that says so.
pub(crate) fn positive_id(path: &str, what: &str) -> Result<i64, Problem> {
    path.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                format!("a {what} id is a positive integer"),
            )
            .with_field("id")
        })
}

fn id(path: &str) -> Result<i64, Problem> {
    positive_id(path, "notification")
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    unread: bool,
    cursor: Option<String>,
    limit: Option<u32>,
}

const MAX_PAGE: u32 = 100;

async fn list(
    req: HttpRequest,
    app: web::Data<App>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, Problem> {
    let user = user(&req, &app)?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("limit is 1 to {MAX_PAGE}"),
        )
        .with_field("limit"));
    }
    let cursor = match &query.cursor {
        None => None,
        Some(c) => Some(c.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "cursor is the next_cursor of a previous page",
            )
            .with_field("cursor")
        })?),
    };
    let page = app
        .store
        .list(user, query.unread, cursor, limit)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(HttpResponse::Ok().json(page))
}

async fn get(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let user = user(&req, &app)?;
    let id = id(&path)?;
    match app.store.get(user, id).await.map_err(|e| unavailable(&e))? {
        Some(notification) => Ok(HttpResponse::Ok().json(notification)),
        None => Err(not_found()),
    }
}

/// What a request may do to one of the caller's notifications.
enum Change {
    Read,
    Delete,
}

async fn change(
    req: &HttpRequest,
    app: &App,
    path: &str,
    change: Change,
) -> Result<HttpResponse, Problem> {
    let user = user(req, app)?;
    let id = id(path)?;
    let done = match change {
        Change::Read => app.store.mark_read(user, id).await,
        Change::Delete => app.store.delete(user, id).await,
    }
    .map_err(|e| unavailable(&e))?;
    if done {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found())
    }
}

async fn read(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    change(&req, &app, &path, Change::Read).await
}

async fn read_all(req: HttpRequest, app: web::Data<App>) -> Result<HttpResponse, Problem> {
    let user = user(&req, &app)?;
    let marked = app
        .store
        .mark_all_read(user)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(HttpResponse::Ok().json(json!({ "marked": marked })))
}

async fn delete(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    change(&req, &app, &path, Change::Delete).await
}

async fn unread_count(req: HttpRequest, app: web::Data<App>) -> Result<HttpResponse, Problem> {
    let user = user(&req, &app)?;
    let unread = app
        .store
        .unread_count(user)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(HttpResponse::Ok().json(json!({ "unread": unread })))
}
