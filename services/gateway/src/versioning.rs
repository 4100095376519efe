//! API versions: by
//! path (`/api/v1/...`, `/api/v2/...`) or, for unversioned paths
//! (`/api/...`), by `Accept: application/vnd.platform.v2+json`. v1 answers
//! carry `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a `Link` to its
//! successor, now that v2 exists.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpRequest, web};

use crate::problem::ApiError;

/// When v1 was deprecated (v2's release): 2026-11-29T00:00:00Z.
const V1_DEPRECATED_AT: i64 = 1_795_910_400;

/// The `Sunset` date, from configuration.
#[derive(Clone, Debug)]
pub struct V1Sunset(pub String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V2,
}

/// The version an unversioned request asks for: v1 unless `Accept` names
/// `application/vnd.platform.v<N>+json`; an unknown N is `406`.
pub fn negotiate(req: &HttpRequest) -> Result<ApiVersion, ApiError> {
    let Some(accept) = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(ApiVersion::V1);
    };
    for media in accept
        .split(',')
        .map(|m| m.split(';').next().unwrap_or("").trim())
    {
        if let Some(version) = media
            .strip_prefix("application/vnd.platform.v")
            .and_then(|rest| rest.strip_suffix("+json"))
        {
            return match version {
                "1" => Ok(ApiVersion::V1),
                "2" => Ok(ApiVersion::V2),
                other => Err(ApiError::NotAcceptable(format!(
                    "API version {other:?} does not exist; this gateway serves v1 and v2"
                ))),
            };
        }
    }
    Ok(ApiVersion::V1)
}

/// Adds the deprecation headers to a v1 response.
pub fn mark_deprecated(headers: &mut actix_web::http::header::HeaderMap, sunset: &str) {
    headers.insert(
        HeaderName::from_static("deprecation"),
        HeaderValue::from_str(&format!("@{V1_DEPRECATED_AT}"))
            .unwrap_or(HeaderValue::from_static("true")),
    );
    if let Ok(value) = HeaderValue::from_str(sunset) {
        headers.insert(HeaderName::from_static("sunset"), value);
    }
    headers.insert(
        actix_web::http::header::LINK,
        HeaderValue::from_static("</api/v2>; rel=\"successor-version\""),
    );
}

/// Middleware for the `/api/v1` scope.
pub async fn deprecate_v1(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let sunset = req.app_data::<web::Data<V1Sunset>>().map(|s| s.0.clone());
    let mut response = next.call(req).await?;
    if let Some(sunset) = sunset {
        mark_deprecated(response.headers_mut(), &sunset);
    }
    Ok(response)
}

/// Any `/api/<version>/...` this gateway does not serve.
pub async fn unknown_version(
    path: web::Path<(String, String)>,
) -> Result<actix_web::HttpResponse, ApiError> {
    let (version, _) = path.into_inner();
    Err(ApiError::UnknownVersion(format!(
        "API version {version:?} does not exist; this gateway serves v1 and v2"
    )))
}
