//! Per-request plumbing: the request id and the authenticated user.

use std::future::{Ready, ready};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, web};

use crate::jwt::TokenSigner;
use crate::problem::ApiError;
use crate::upstream::CallContext;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A caller's id is kept if it is short and plain (it ends up in logs and
/// upstream metadata); anything else is replaced by a fresh one.
fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Middleware: accepts or generates `X-Request-Id` and echoes it.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    req.extensions_mut().insert(CallContext {
        request_id: id.clone(),
    });
    let mut response = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

impl FromRequest for CallContext {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ctx = req
            .extensions()
            .get::<CallContext>()
            .cloned()
            .unwrap_or_else(|| CallContext {
                request_id: uuid::Uuid::new_v4().to_string(),
            });
        ready(Ok(ctx))
    }
}

/// The user a valid `Authorization: Bearer` token names.
#[derive(Clone, Copy, Debug)]
pub struct AuthUser(pub u64);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

/// Who is asking, on routes open to everyone: anonymous without an
/// `Authorization` header; a user with a valid token; `401` for a header
/// that does not hold one (a bad token is never quietly read as anonymous).
#[derive(Clone, Copy, Debug)]
pub struct Viewer(pub Option<u64>);

impl Viewer {
    /// Whether the viewer is the user `id`, who may see their private
    /// fields.
    pub fn is(&self, id: u64) -> bool {
        self.0 == Some(id)
    }
}

impl FromRequest for Viewer {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let viewer = if req
            .headers()
            .contains_key(actix_web::http::header::AUTHORIZATION)
        {
            authenticate(req).map(|user| Self(Some(user.0)))
        } else {
            Ok(Self(None))
        };
        ready(viewer)
    }
}

fn authenticate(req: &HttpRequest) -> Result<AuthUser, ApiError> {
    let unauthorized = |why: &str| ApiError::Unauthorized(why.to_owned());
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("an Authorization: Bearer token is required"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(common::auth::bearer)
        .ok_or_else(|| unauthorized("the Authorization header must be 'Bearer <token>'"))?;
    verify_token(req, token)
}

/// The user a token names, if it is valid and this gateway signed it.
pub fn verify_token(req: &HttpRequest, token: &str) -> Result<AuthUser, ApiError> {
    let unauthorized = |why: &str| ApiError::Unauthorized(why.to_owned());
    let signer = req
        .app_data::<web::Data<TokenSigner>>()
        .ok_or_else(|| unauthorized("authentication is not configured"))?;
    let claims = signer
        .verify(token)
        .map_err(|e| unauthorized(&e.to_string()))?;
    claims
        .sub
        .parse()
        .map(AuthUser)
        .map_err(|_| unauthorized("the token names no user"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_must_be_plain() {
        assert!(super::acceptable("abc-123_x.y:z"));
        assert!(!super::acceptable(""));
        assert!(!super::acceptable("a\r\nSet-Cookie: x"));
        assert!(!super::acceptable(&"x".repeat(129)));
    }
}
