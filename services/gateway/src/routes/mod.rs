//! The REST API under `/api/v1`.

pub mod admin;
pub(crate) mod auth;
pub(crate) mod posts;
pub(crate) mod search;
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
            .route("/users", not_allowed("GET"))
            .route("/users/{id}", aw::get().to(v2::get_user))
            .route("/users/{id}", not_allowed("GET"))
            .route("/users/{id}/posts", aw::get().to(v2::posts_of_user))
            .route("/users/{id}/posts", not_allowed("GET"))
            .route("/users/{id}/comments", aw::get().to(v2::comments_of_user))
            .route("/users/{id}/comments", not_allowed("GET"))
            .route("/posts/{id}", aw::get().to(v2::get_post))
            .route("/posts/{id}", not_allowed("GET"))
            .route("/posts/{id}/comments", aw::get().to(v2::comments_of_post))
            .route("/posts/{id}/comments", not_allowed("GET"))
            .route("/comments/{id}", aw::get().to(v2::get_comment))
            .route("/comments/{id}", not_allowed("GET")),
    )
    .service(
        aw::scope("/api")
            .wrap(from_fn(limit_rate))
            .wrap(from_fn(request_id))
            .wrap(from_fn(crate::cors::cors))
            .route("/users", aw::get().to(negotiated_list))
            .route("/users", not_allowed("GET"))
            .route("/users/{id}", aw::get().to(negotiated_get))
            .route("/users/{id}", not_allowed("GET"))
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

/// The `Idempotency-Key` header of a create, for the OpenAPI document
/// ([`crate::request::IdempotencyHeader`] reads it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub(crate) struct IdempotencyKeyParam {
    /// A key of the client's choosing (a UUID, say): a retry with the same
    /// key and body gets the first answer again and creates nothing (kept
    /// 24 hours); the same key with another body is `422
    /// idempotency_key_reused`. Without one the gateway never retries a
    /// create.
    #[param(
        rename = "Idempotency-Key",
        required = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]{1,255}$"
    )]
    #[allow(dead_code)]
    idempotency_key: String,
}

/// `?page=&per_page=` of every listing. Out of range is a 400, not a
/// quiet clamp, so the bounds the OpenAPI document states are the ones
/// enforced.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Paging {
    /// Page number, from 1; 1 when absent.
    #[serde(default, deserialize_with = "in_range::<_, _, 1, { i32::MAX as i64 }>")]
    #[param(minimum = 1, maximum = 2147483647)]
    pub page: Option<i32>,
    /// Items per page, 1 to 100; 20 when absent.
    #[serde(default, deserialize_with = "in_range::<_, _, 1, 100>")]
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<i32>,
}

/// An optional integer query parameter within `MIN..=MAX`.
pub(crate) fn in_range<'de, D, T, const MIN: i64, const MAX: i64>(
    deserializer: D,
) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Into<i64> + Copy,
{
    let value: Option<T> = serde::Deserialize::deserialize(deserializer)?;
    match value {
        Some(v) if !(MIN..=MAX).contains(&v.into()) => Err(serde::de::Error::custom(format!(
            "must be between {MIN} and {MAX}"
        ))),
        other => Ok(other),
    }
}

impl Paging {
    /// The users service's default page size too.
    const DEFAULT_PER_PAGE: i32 = 20;

    /// Within bounds already: deserializing refused anything else.
    pub fn page(&self) -> i32 {
        self.page.unwrap_or(1)
    }

    pub fn per_page(&self) -> i32 {
        self.per_page.unwrap_or(Self::DEFAULT_PER_PAGE)
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
fn method_not_allowed(allow: &'static str) -> HttpResponse {
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
}

/// A route for every method the path does not answer: `405` with `Allow`.
pub(crate) fn not_allowed(allow: &'static str) -> actix_web::Route {
    aw::route().to(move || async move { method_not_allowed(allow) })
}
