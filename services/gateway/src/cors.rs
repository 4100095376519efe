//! CORS for browser clients on other origins (`GATEWAY_CORS_ORIGINS`).
//!
//! Only listed origins get CORS headers, credentials included; none are
//! listed by default, so a browser on another origin can read nothing.
//! Preflights are answered here, before rate limits and routing; one from
//! an unlisted origin is `403 cors_origin_forbidden`. `Vary: Origin` keeps
//! caches from serving one origin's answer to another.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, web};
use common::problem::Problem;

/// The origins allowed to call the API from a browser.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsOrigins(pub Vec<String>);

impl CorsOrigins {
    fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o == origin)
    }
}

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS";
const ALLOW_HEADERS: &str = "authorization, content-type, x-request-id, last-event-id";
/// What browser clients must be able to read: rate-limit state, where a
/// created resource is, when to retry, and the request id for support.
const EXPOSE_HEADERS: &str = "location, retry-after, x-request-id, x-ratelimit-limit, \
     x-ratelimit-remaining, x-ratelimit-reset, ratelimit-limit, ratelimit-remaining, \
     ratelimit-reset, deprecation, sunset, link";
const MAX_AGE: &str = "600";

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}

fn vary_origin(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// Middleware: answers preflights and adds CORS headers for listed
/// origins.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let origins = req.app_data::<web::Data<CorsOrigins>>().cloned();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let (Some(origins), Some(origin)) = (origins, origin) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let allowed = origin.to_str().is_ok_and(|o| origins.allows(o));
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = if allowed {
            let mut ok = HttpResponse::NoContent().finish();
            let headers = ok.headers_mut();
            allow(headers, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
            ok
        } else {
            tracing::debug!(?origin, "refused a CORS preflight from an unlisted origin");
            Problem::new(
                StatusCode::FORBIDDEN,
                "cors_origin_forbidden",
                "this origin may not call the API from a browser",
            )
            .response()
        };
        vary_origin(response.headers_mut());
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    if allowed {
        allow(headers, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    vary_origin(headers);
    Ok(response.map_into_left_body())
}
