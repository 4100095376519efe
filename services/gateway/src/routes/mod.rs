//! The REST API under `/api/v1`.

pub mod admin;
pub(crate) mod auth;
pub(crate) mod posts;
pub(crate) mod users;
pub(crate) mod v2;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, web};

use crate::problem::ApiError;

use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, web as aw};

use crate::Gateway;
use crate::ratelimit::limit_rate;
use crate::request::request_id;
use crate::upstream::CallContext;
use crate::versioning::{self, ApiVersion, V1Sunset};

/// Every public route: `/api/v1`, `/api/v2`, the unversioned `/api`
/// (version from `Accept`), and a clear answer for unknown versions.
pub fn configure(cfg: &mut aw::ServiceConfig) {
    cfg.route("/openapi.json", aw::get().to(crate::openapi::serve));
    users::configure(cfg);
    cfg.service(
        aw::scope("/api/v2")
            .wrap(from_fn(limit_rate))
            .wrap(from_fn(request_id))
            .wrap(from_fn(crate::cors::cors))
            .route("/users", aw::get().to(v2::list_users))
            .route("/users/{id}", aw::get().to(v2::get_user))
            .route("/users/{id}/posts", aw::get().to(v2::posts_of_user))
            .route("/users/{id}/comments", aw::get().to(v2::comments_of_user))
            .route("/posts/{id}", aw::get().to(v2::get_post))
            .route("/posts/{id}/comments", aw::get().to(v2::comments_of_post))
            .route("/comments/{id}", aw::get().to(v2::get_comment)),
    )
    .service(
        aw::scope("/api")
            .wrap(from_fn(limit_rate))
            .wrap(from_fn(request_id))
            .wrap(from_fn(crate::cors::cors))
            .route("/users", aw::get().to(negotiated_list))
            .route("/users/{id}", aw::get().to(negotiated_get))
            .route("/{version}/{tail:.*}", aw::to(versioning::unknown_version)),
    );
}

fn deprecated_v1(mut response: HttpResponse, sunset: &V1Sunset) -> HttpResponse {
    versioning::mark_deprecated(response.headers_mut(), &sunset.0);
    response
}

async fn negotiated_list(
    req: actix_web::HttpRequest,
    gw: aw::Data<Gateway>,
    ctx: CallContext,
    viewer: crate::auth::Viewer,
    sunset: aw::Data<V1Sunset>,
) -> Result<HttpResponse, ApiError> {
    let invalid = |e: actix_web::error::QueryPayloadError| {
        ApiError::bad_request("invalid_query", format!("invalid query string: {e}"))
    };
    match versioning::negotiate(&req)? {
        ApiVersion::V1 => {
            let query = aw::Query::<Paging>::from_query(req.query_string()).map_err(invalid)?;
            Ok(deprecated_v1(
                users::list(gw, ctx, viewer, query).await?,
                &sunset,
            ))
        }
        ApiVersion::V2 => {
            let query =
                aw::Query::<v2::CursorQuery>::from_query(req.query_string()).map_err(invalid)?;
            v2::list_users(gw, ctx, viewer, query).await
        }
    }
}

async fn negotiated_get(
    req: actix_web::HttpRequest,
    gw: aw::Data<Gateway>,
    ctx: CallContext,
    viewer: crate::auth::Viewer,
    sunset: aw::Data<V1Sunset>,
    id: aw::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    match versioning::negotiate(&req)? {
        ApiVersion::V1 => Ok(deprecated_v1(
            users::get(gw, ctx, viewer, id).await?,
            &sunset,
        )),
        ApiVersion::V2 => v2::get_user(gw, ctx, viewer, id).await,
    }
}

/// `?page=&per_page=` of every listing; the users service clamps.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Paging {
    pub page: Option<i32>,
    pub per_page: Option<i32>,
}

impl Paging {
    /// What the users service will apply: 0 or absent means 20, at most 100.
    pub fn effective_per_page(&self) -> i32 {
        match self.per_page.unwrap_or(0) {
            p if p <= 0 => 20,
            p => p.min(100),
        }
    }
}

/// Body, path and query errors as problem details instead of actix-web's
/// plain-text defaults.
pub fn extractor_config(cfg: &mut web::ServiceConfig, max_body: usize) {
    cfg.app_data(web::PayloadConfig::new(max_body))
        .app_data(
            web::JsonConfig::default()
                .limit(max_body)
                .error_handler(move |error, _req: &HttpRequest| json_error(error, max_body).into()),
        )
        .app_data(
            web::PathConfig::default().error_handler(|error: PathError, _| {
                ApiError::bad_request("invalid_path", format!("invalid path parameter: {error}"))
                    .into()
            }),
        )
        .app_data(
            web::QueryConfig::default().error_handler(|error: QueryPayloadError, _| {
                ApiError::bad_request("invalid_query", format!("invalid query string: {error}"))
                    .into()
            }),
        );
}

fn json_error(error: JsonPayloadError, limit: usize) -> ApiError {
    match error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge { limit }
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) => {
            ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}"))
        }
        other => ApiError::bad_request("invalid_body", format!("unreadable body: {other}")),
    }
}

/// The last route of a path: any method its other routes do not take is
/// `405 method_not_allowed` with `Allow` (RFC 9110 §15.5.6), not a 404
/// that says the resource is missing.
pub(crate) fn not_allowed(allow: &'static str) -> actix_web::Route {
    aw::route().to(move || async move {
        let mut response = common::problem::Problem::new(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this resource answers {allow}"),
        )
        .response();
        response.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        response
    })
}
