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
use crate::store::{Idempotency, Replay, Store, StoreError};

use platform_proto::{IDEMPOTENCY_KEY, IDEMPOTENCY_MISMATCH, IDEMPOTENCY_SCOPE};

/// The request's idempotency key, if it has one, with the fingerprint of
/// what it asks (`method` and `what`, the encoded message minus any secret:
/// a fast hash of a password must never be stored).
pub(crate) fn idempotency<M>(
    request: &tonic::Request<M>,
    method: &'static str,
    what: &[u8],
) -> Result<Option<Idempotency>, Status> {
    use sha2::Digest as _;
    let metadata = request.metadata();
    let Some(key) = metadata.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()))
        .ok_or_else(|| {
            Status::invalid_argument("idempotency-key must be 1 to 255 visible ASCII characters")
        })?;
    let scope = metadata
        .get(IDEMPOTENCY_SCOPE)
        .and_then(|s| s.to_str().ok())
        .filter(|s| (1..=200).contains(&s.len()))
        .ok_or_else(|| Status::invalid_argument("idempotency-key needs an idempotency-scope"))?;
    let mut digest = sha2::Sha256::new();
    digest.update(method.as_bytes());
    digest.update([0]);
    digest.update(what);
    let fingerprint = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Some(Idempotency {
        scope: scope.to_owned(),
        key: key.to_owned(),
        method,
        fingerprint,
    }))
}

fn key_reused() -> Status {
    let mut status =
        Status::failed_precondition("this Idempotency-Key was used with a different request");
    status.metadata_mut().insert(
        IDEMPOTENCY_MISMATCH,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

/// Runs `create` at most once per idempotency key: a repeat gets the
/// recorded answer, the same key with another request is refused.
pub(crate) async fn once<T>(
    store: &Store,
    idempotency: Option<Idempotency>,
    create: impl AsyncFnOnce(Option<&Idempotency>) -> Result<T, StoreError>,
) -> Result<T, Status>
where
    T: serde::de::DeserializeOwned,
{
    let Some(idempotency) = idempotency else {
        return create(None).await.map_err(store_status);
    };
    let replayed = async |store: &Store| match store.replay(&idempotency).await {
        Ok(Replay::Answered(answer)) => {
            metrics::counter!("users_idempotent_replays_total").increment(1);
            Ok(Some(answer))
        }
        Ok(Replay::Mismatch) => Err(key_reused()),
        Ok(Replay::New) => Ok(None),
        Err(error) => Err(store_status(error)),
    };
    if let Some(answer) = replayed(store).await? {
        return Ok(answer);
    }
    match create(Some(&idempotency)).await {
        // The same key committed by a concurrent request a moment ago (a
        // sign-up's twin trips over the username first): its answer is
        // this one's.
        Err(error @ (StoreError::IdempotencyRace | StoreError::Taken { .. })) => {
            match replayed(store).await? {
                Some(answer) => Ok(answer),
                None if matches!(error, StoreError::Taken { .. }) => Err(store_status(error)),
                // Committed, yet not readable here yet: the gateway
                // retries (the key makes that safe).
                None => Err(Status::unavailable("retry the request")),
            }
        }
        other => other.map_err(store_status),
    }
}

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
