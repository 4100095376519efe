//! The REST API under `/api/v1`.

pub mod admin;
mod posts;
mod users;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, web};

use crate::problem::ApiError;

pub use users::configure;

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
    cfg.app_data(
        web::JsonConfig::default()
            .limit(max_body)
            .error_handler(move |error, _req: &HttpRequest| json_error(error, max_body).into()),
    )
    .app_data(
        web::PathConfig::default().error_handler(|error: PathError, _| {
            ApiError::bad_request("invalid_path", format!("invalid path parameter: {error}")).into()
        }),
    )
    .app_data(
        web::QueryConfig::default().error_handler(|error: QueryPayloadError, _| {
            ApiError::bad_request("invalid_query", format!("invalid query string: {error}")).into()
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
