//! Every error the gateway returns, mapped once into the platform's RFC
//! 9457 [`Problem`] (stable `code`s listed in the README).

use std::time::Duration;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
pub use common::problem::{Problem, ProblemBody};
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
    /// The `Idempotency-Key` was used before with another request.
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("too many requests")]
    TooManyRequests { retry_after: Duration },
    #[error("the {service} service is unavailable")]
    Unavailable {
        service: Arc<str>,
        retry_after: Duration,
    },
    #[error("the {service} service did not answer in time")]
    Timeout { service: Arc<str> },
    #[error("the {service} service failed")]
    BadGateway { service: Arc<str> },
    /// A fault of the gateway itself; the detail is logged, not sent.
    #[error("the gateway failed to answer")]
    Internal(String),
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
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::Unavailable { .. } => "upstream_unavailable",
            Self::Timeout { .. } => "upstream_timeout",
            Self::BadGateway { .. } => "upstream_error",
            Self::Internal(_) => "internal",
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
    pub fn from_status(service: &Arc<str>, status: &tonic::Status) -> Self {
        let field = status
            .get_details_bad_request()
            .and_then(|b| b.field_violations.into_iter().next())
            .map(|v| v.field);
        let detail = status.message().to_owned();
        if status
            .metadata()
            .contains_key(common::auth::grpc::REFUSED_METADATA)
        {
            // The gateway's own credentials were refused: a deployment
            // fault (secrets that differ), not the client's.
            tracing::error!(%service, detail, "the upstream refused the gateway's service token");
            return Self::BadGateway {
                service: service.clone(),
            };
        }
        if status
            .metadata()
            .contains_key(platform_proto::IDEMPOTENCY_MISMATCH)
        {
            return Self::IdempotencyKeyReused;
        }
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
            Code::DeadlineExceeded => Self::Timeout {
                service: service.clone(),
            },
            Code::Unavailable | Code::ResourceExhausted => Self::Unavailable {
                service: service.clone(),
                retry_after: Duration::from_secs(1),
            },
            _ => Self::BadGateway {
                service: service.clone(),
            },
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
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(detail) = self {
            tracing::error!(%detail, "answered 500");
        }
        Problem::from(self).response()
    }
}

impl From<&ApiError> for Problem {
    fn from(error: &ApiError) -> Self {
        let mut problem = Problem::new(error.status_code(), error.code(), error.to_string());
        problem.field = error.field().map(str::to_owned);
        problem.retry_after = error.retry_after();
        problem
    }
}
