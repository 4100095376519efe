//! The gRPC API: `users.v1.UserService`, `posts.v1.PostService` and
//! `posts.v1.CommentService`, over the store and the cache.
//!
//! Each error maps to one status: unknown ids `NOT_FOUND`, taken usernames
//! or emails `ALREADY_EXISTS`, stale versions `ABORTED`, invalid fields
//! `INVALID_ARGUMENT` with a `BadRequest` detail naming the field, storage
//! failures `UNAVAILABLE` (details go to the log, not the caller).

mod posts;
mod users;

pub use posts::{CommentApi, PostApi};
pub use users::UserApi;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::FieldError;
use crate::store::StoreError;

pub(crate) fn invalid(error: FieldError) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        error.to_string(),
        ErrorDetails::with_bad_request_violation(error.field, error.message),
    )
}

pub(crate) fn store_status(error: StoreError) -> Status {
    status_for(&error)
}

fn status_for(error: &StoreError) -> Status {
    match error {
        StoreError::Shared(inner) => status_for(inner),
        StoreError::NotFound { .. } => Status::not_found(error.to_string()),
        StoreError::Taken { field } => Status::with_error_details(
            Code::AlreadyExists,
            error.to_string(),
            ErrorDetails::with_bad_request_violation(*field, "is already taken"),
        ),
        StoreError::Conflict { .. } => Status::aborted(error.to_string()),
        _ => {
            tracing::error!(error = %common::exit::chain(error), "storage failure");
            Status::unavailable("storage is unavailable; retry later")
        }
    }
}

/// proto `uint64` → our `i64` version, rejecting what cannot exist.
pub(crate) fn version(field: &'static str, raw: Option<u64>) -> Result<Option<i64>, Status> {
    raw.map(|v| i64::try_from(v).map_err(|_| invalid(FieldError::new(field, "is out of range"))))
        .transpose()
}

pub(crate) fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

/// The caller's trace context, stored with the events a command appends.
pub(crate) fn traceparent() -> Option<String> {
    common::telemetry::propagation::current_traceparent()
}

pub(crate) fn total(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
