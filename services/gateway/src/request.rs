//! Per-request plumbing: the request id (the caller is [`crate::auth`]'s).

use std::future::{Ready, ready};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest};

use crate::problem::ApiError;
use crate::upstream::CallContext;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// A create's `Idempotency-Key` header (the IETF httpapi draft; Stripe's
/// semantics): 1 to 255 visible ASCII characters, taken as an opaque value
/// (the draft's quoted form is one such value, quotes included). Anything
/// else is `400 invalid_idempotency_key`.
pub struct IdempotencyHeader(pub Option<String>);

fn idempotency_key(key: &str) -> Option<&str> {
    ((1..=255).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b)))
        .then_some(key)
}

impl FromRequest for IdempotencyHeader {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let header = match req.headers().get(&IDEMPOTENCY_KEY) {
            None => Ok(Self(None)),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(idempotency_key)
                .map(|key| Self(Some(key.to_owned())))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    )
                }),
        };
        ready(header)
    }
}

impl CallContext {
    /// Carries `header`'s key, scoped to `scope` (`user:<id>`, or the
    /// client's address for anonymous calls), to the owning service.
    pub fn with_idempotency(mut self, header: IdempotencyHeader, scope: String) -> Self {
        self.idempotency = header
            .0
            .map(|key| crate::upstream::IdempotencyKey { key, scope });
        self
    }
}

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
        idempotency: None,
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
                idempotency: None,
            });
        ready(Ok(ctx))
    }
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

    #[test]
    fn idempotency_keys_are_short_visible_ascii() {
        use super::idempotency_key;
        assert_eq!(idempotency_key("8e03978e-40d5"), Some("8e03978e-40d5"));
        assert_eq!(idempotency_key("\"8e03978e\""), Some("\"8e03978e\""));
        assert_eq!(idempotency_key(""), None);
        assert_eq!(idempotency_key("two words"), None);
        assert_eq!(idempotency_key(&"k".repeat(256)), None);
    }
}
