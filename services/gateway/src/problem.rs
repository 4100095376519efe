//! Every error the gateway returns, as RFC 9457 problem details:
//! `application/problem+json` with `type`, `title`, `status`, `detail` and
//! a stable machine-readable `code` (listed in the README).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest {
        code: &'static str,
        detail: String,
        field: Option<String>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{detail}")]
    Conflict {
        code: &'static str,
        detail: String,
        field: Option<String>,
    },
    /// `Accept` asks for a version this gateway does not serve.
    #[error("{0}")]
    NotAcceptable(String),
    /// The path names a version this gateway does not serve.
    #[error("{0}")]
    UnknownVersion(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("too many requests")]
    TooManyRequests { retry_after: Duration },
    #[error("the {service} service is unavailable")]
    Unavailable {
        service: &'static str,
        retry_after: Duration,
    },
    #[error("the {service} service did not answer in time")]
    Timeout { service: &'static str },
    #[error("the {service} service failed")]
    BadGateway { service: &'static str },
}

/// RFC 9457 problem details, as every error is returned.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: &'static str,
    pub title: String,
    pub status: u16,
    /// Stable, machine-readable error code.
    #[schema(example = "invalid_field")]
    pub code: String,
    pub detail: String,
    /// The offending field, for field errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
            field: None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } | Self::Conflict { code, .. } => code,
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::NotAcceptable(_) | Self::UnknownVersion(_) => "unsupported_version",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::Unavailable { .. } => "upstream_unavailable",
            Self::Timeout { .. } => "upstream_timeout",
            Self::BadGateway { .. } => "upstream_error",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TooManyRequests { retry_after } | Self::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Self::BadRequest { field, .. } | Self::Conflict { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// Maps a users-service status; `service` names the upstream.
    pub fn from_status(service: &'static str, status: &tonic::Status) -> Self {
        let field = status
            .get_details_bad_request()
            .and_then(|b| b.field_violations.into_iter().next())
            .map(|v| v.field);
        let detail = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::BadRequest {
                code: "invalid_field",
                detail,
                field,
            },
            Code::NotFound => Self::NotFound(detail),
            Code::AlreadyExists => Self::Conflict {
                code: "already_exists",
                detail,
                field,
            },
            Code::Aborted | Code::FailedPrecondition => Self::Conflict {
                code: "version_conflict",
                detail,
                field: None,
            },
            Code::Unauthenticated => Self::Unauthorized(detail),
            Code::PermissionDenied => Self::Forbidden(detail),
            Code::DeadlineExceeded => Self::Timeout { service },
            Code::Unavailable | Code::ResourceExhausted => Self::Unavailable {
                service,
                retry_after: Duration::from_secs(1),
            },
            _ => Self::BadGateway { service },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::UnknownVersion(_) => StatusCode::NOT_FOUND,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let body = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            code: self.code().to_owned(),
            detail: self.to_string(),
            field: self.field().map(str::to_owned),
        };
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        if let Some(retry) = self.retry_after() {
            let seconds = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.insert_header((header::RETRY_AFTER, value));
            }
        }
        if matches!(self, Self::Unauthorized(_)) {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        response.json(body)
    }
}
