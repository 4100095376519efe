//! RFC 9457 problem details: the one error body every service answers with.
//!
//! A client sees errors from the host (an unknown path), the gateway and
//! the services behind it, often relayed unchanged; they all have one shape
//! so that one client-side handler reads them all:
//!
//! ```json
//! { "type": "urn:platform:problem:invalid_field", "title": "Bad Request",
//!   "status": 400, "code": "invalid_field",
//!   "detail": "username must be 3 to 32 characters", "field": "username" }
//! ```
//!
//! `code` is the stable, machine-readable part (listed in the README);
//! `type` is derived from it, always the same way ([`type_uri`]), so the
//! two never disagree. A URN rather than an `https` address because the
//! platform is deployed under its users' own domains: there is no address
//! that would resolve for all of them, and RFC 9457 (§3.1.1) lets a type be
//! a non-resolvable URI. `detail` is for humans and may change.
//!
//! A service maps its error enum into a [`Problem`] once (`From<&E>`) and
//! answers with [`Problem::response`]; nothing else builds problem bodies.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

/// Media type of every problem body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// Prefix of every problem `type`.
pub const TYPE_PREFIX: &str = "urn:platform:problem:";

/// The `type` URI of problems with this `code`.
pub fn type_uri(code: &str) -> String {
    format!("{TYPE_PREFIX}{code}")
}

/// An error a handler answers with. Its wire form is [`ProblemBody`]:
/// `type` and `title` are derived from `code` and `status`, so they are
/// not stored (and cannot disagree with them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub status: u16,
    /// Stable, machine-readable error code.
    pub code: Cow<'static, str>,
    /// What went wrong, for humans.
    pub detail: String,
    /// The offending input field, for validation errors.
    pub field: Option<String>,
    /// Sent as `Retry-After`, not in the body.
    pub retry_after: Option<Duration>,
}

/// RFC 9457 problem details: every error, as it goes over the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Problem))]
pub struct ProblemBody {
    /// `urn:platform:problem:<code>`.
    #[serde(rename = "type")]
    #[cfg_attr(
        feature = "openapi",
        schema(example = "urn:platform:problem:invalid_field")
    )]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    /// Stable, machine-readable error code.
    #[cfg_attr(feature = "openapi", schema(example = "invalid_field"))]
    pub code: String,
    /// What went wrong, for humans.
    pub detail: String,
    /// The offending input field, for validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status: status.as_u16(),
            code: code.into(),
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// What goes over the wire.
    pub fn body(&self) -> ProblemBody {
        ProblemBody {
            kind: type_uri(&self.code),
            title: self
                .status()
                .canonical_reason()
                .unwrap_or("Error")
                .to_owned(),
            status: self.status,
            code: self.code.to_string(),
            detail: self.detail.clone(),
            field: self.field.clone(),
        }
    }

    /// 404 for a path no route matches.
    pub fn no_route(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {method} {path}"),
        )
    }

    /// The HTTP response: the body, its media type, `Retry-After` (whole
    /// seconds, rounded up, at least 1) and, for 401, the challenge.
    /// A JSON body that could not be taken (`web::JsonConfig`'s error
    /// handler): too large (`limit` bytes at most), not JSON, or not
    /// what the route reads.
    pub fn json_body(error: &actix_web::error::JsonPayloadError, limit: usize) -> Self {
        use actix_web::error::JsonPayloadError as E;
        match error {
            E::Overflow { .. } | E::OverflowKnownLength { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("bodies are at most {limit} bytes"),
            ),
            E::ContentType => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send Content-Type: application/json",
            ),
            other => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("invalid JSON body: {other}"),
            ),
        }
    }

    pub fn response(&self) -> HttpResponse {
        let status = self.status();
        let mut response = HttpResponse::build(status);
        response.content_type(CONTENT_TYPE);
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response.insert_header((header::RETRY_AFTER, seconds.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        response.json(self.body())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Problem {}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_shape_is_rfc_9457_with_a_code_and_a_type_derived_from_it() {
        let problem = Problem::new(StatusCode::BAD_REQUEST, "invalid_field", "too short")
            .with_field("username");
        let json = serde_json::to_value(problem.body()).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "type": "urn:platform:problem:invalid_field",
                "title": "Bad Request",
                "status": 400,
                "code": "invalid_field",
                "detail": "too short",
                "field": "username",
            })
        );
        let no_field =
            serde_json::to_value(Problem::new(StatusCode::NOT_FOUND, "not_found", "x").body())
                .expect("serialises");
        assert!(no_field.get("field").is_none(), "{no_field}");
        assert_eq!(
            serde_json::from_value::<ProblemBody>(json).expect("parses back"),
            problem.body()
        );
    }

    #[test]
    fn the_response_carries_the_media_type_and_the_headers_its_status_needs() {
        let limited = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down")
            .with_retry_after(Duration::from_millis(1200))
            .response();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        let get = |res: &HttpResponse, name| res.headers().get(name).cloned();
        assert_eq!(get(&limited, header::CONTENT_TYPE).unwrap(), CONTENT_TYPE);
        assert_eq!(get(&limited, header::RETRY_AFTER).unwrap(), "2");
        assert!(!limited.headers().contains_key(header::WWW_AUTHENTICATE));

        let unauthorized =
            Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "no token").response();
        assert_eq!(
            get(&unauthorized, header::WWW_AUTHENTICATE).unwrap(),
            "Bearer"
        );
        assert!(!unauthorized.headers().contains_key(header::RETRY_AFTER));
    }
}
