//! `users.v1.UserService`.

use std::pin::Pin;

use platform_proto::users::v1 as pb;
use platform_proto::users::v1::user_service_server::UserService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{invalid, store_status, total, traceparent, unsigned, version};
use crate::domain::{Email, FieldError, Password, Slice, Username, parse_id};
use crate::password::{HashError, Hasher};
use crate::store::{NewUser, Store, StoredEvent, User, UserChanges};
use crate::views::Views;

/// Rows per page read while exporting: bounded memory whatever the table size.
const DEFAULT_EXPORT_PAGE: u32 = 500;
const MAX_EXPORT_PAGE: u32 = 1000;

#[derive(Clone)]
pub struct UserApi {
    store: Store,
    views: Views,
    hasher: Hasher,
}

impl UserApi {
    pub fn new(store: Store, views: Views, hasher: Hasher) -> Self {
        Self {
            store,
            views,
            hasher,
        }
    }
}

/// `Busy` is the bulkhead shedding load: `RESOURCE_EXHAUSTED`, which the
/// gateway answers 503 with `Retry-After` and never retries.
fn hash_status(error: HashError, what: &'static str) -> Status {
    match error {
        HashError::Busy => Status::resource_exhausted(error.to_string()),
        error => {
            tracing::error!(%error, "password hashing failed");
            Status::internal(what)
        }
    }
}

pub(crate) fn to_proto(user: User) -> pb::User {
    pb::User {
        id: unsigned(user.id),
        username: user.username,
        email: user.email,
        created_at: user.created_at,
        updated_at: user.updated_at,
        version: unsigned(user.version),
    }
}

fn event_to_proto(event: StoredEvent) -> pb::StoredEvent {
    pb::StoredEvent {
        position: unsigned(event.position),
        event_id: event.event_id,
        aggregate_type: event.aggregate_type,
        aggregate_id: unsigned(event.aggregate_id),
        version: unsigned(event.version),
        event_type: event.event_type,
        schema_version: u32::try_from(event.schema_version).unwrap_or_default(),
        payload: event.payload,
        occurred_at: event.occurred_at,
    }
}

fn export_page(raw: u32) -> i64 {
    i64::from(if raw == 0 {
        DEFAULT_EXPORT_PAGE
    } else {
        raw.min(MAX_EXPORT_PAGE)
    })
}

type ExportStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Streams pages fetched by `next_page(after)` through a channel of two
/// pages' worth, so a slow client holds back the reader instead of the
/// server buffering the table. A cancelled call closes the channel and the
/// reader stops at its next send.
fn export<T, F, Fut>(page: i64, mut next_page: F) -> ExportStream<T>
where
    T: Send + 'static,
    F: FnMut(i64, i64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<(i64, T)>, Status>> + Send,
{
    let capacity = usize::try_from(page).unwrap_or(1).max(1) * 2;
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    tokio::spawn(async move {
        let mut after = 0;
        loop {
            let rows = match next_page(after, page).await {
                Ok(rows) => rows,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let done = i64::try_from(rows.len()).unwrap_or(0) < page;
            for (key, item) in rows {
                after = key;
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
            if done {
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let id = parse_id("id", request.into_inner().id).map_err(invalid)?;
        let user = self.views.user(id).await.map_err(store_status)?;
        Ok(Response::new(to_proto(user)))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        // The password stays out of the fingerprint: a retry is recognised
        // by who it signs up, and no fast hash of a password is kept.
        let identity = {
            let r = request.get_ref();
            format!("{}\n{}", r.username, r.email)
        };
        let idempotency = super::idempotency(&request, "CreateUser", identity.as_bytes())?;
        let req = request.into_inner();
        let username = Username::parse(&req.username).map_err(invalid)?;
        let email = Email::parse(&req.email).map_err(invalid)?;
        let password = Password::parse(&req.password).map_err(invalid)?;
        if let Some(key) = &idempotency {
            // A repeat is answered before any password is hashed.
            if let Ok(crate::store::Replay::Answered(user)) = self.store.replay::<User>(key).await {
                metrics::counter!("users_idempotent_replays_total").increment(1);
                return Ok(Response::new(to_proto(user)));
            }
        }
        let password_hash = self
            .hasher
            .hash(password)
            .await
            .map_err(|e| hash_status(e, "could not secure the password"))?;
        let new = NewUser {
            username,
            email,
            password_hash,
        };
        let trace = traceparent();
        let user = super::once(&self.store, idempotency, async |key| {
            self.store
                .create_user_once(new, trace.as_deref(), key)
                .await
        })
        .await?;
        Ok(Response::new(to_proto(user)))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", req.id).map_err(invalid)?;
        let changes = UserChanges {
            username: req
                .username
                .as_deref()
                .map(Username::parse)
                .transpose()
                .map_err(invalid)?,
            email: req
                .email
                .as_deref()
                .map(Email::parse)
                .transpose()
                .map_err(invalid)?,
        };
        let expected = version("expected_version", req.expected_version)?;
        let user = self
            .store
            .update_user(id, changes, expected, traceparent().as_deref())
            .await
            .map_err(store_status)?;
        self.views.invalidate_user(id).await;
        Ok(Response::new(to_proto(user)))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", req.id).map_err(invalid)?;
        let expected = version("expected_version", req.expected_version)?;
        self.store
            .delete_user(id, expected, traceparent().as_deref())
            .await
            .map_err(store_status)?;
        self.views.invalidate_user(id).await;
        Ok(Response::new(pb::DeleteUserResponse { success: true }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let req = request.into_inner();
        let slice = Slice::parse(req.page, req.per_page, req.after_id).map_err(invalid)?;
        let (users, count) = match slice {
            Slice::After { id, limit } => {
                let users = self
                    .store
                    .users_after(id, limit)
                    .await
                    .map_err(store_status)?;
                (users, self.store.count_users().await.map_err(store_status)?)
            }
            Slice::Page(page) => self.store.list_users(page).await.map_err(store_status)?,
        };
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(to_proto).collect(),
            total: total(count),
        }))
    }

    async fn lookup_username(
        &self,
        request: Request<pb::LookupUsernameRequest>,
    ) -> Result<Response<pb::UserRef>, Status> {
        let username = Username::parse(&request.into_inner().username).map_err(invalid)?;
        match self
            .store
            .user_by_username(username.as_str())
            .await
            .map_err(store_status)?
        {
            Some(user) => Ok(Response::new(pb::UserRef {
                id: u64::try_from(user.id).unwrap_or_default(),
                username: user.username,
            })),
            None => Err(Status::not_found("no user has that username")),
        }
    }

    async fn verify_credentials(
        &self,
        request: Request<pb::VerifyCredentialsRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let req = request.into_inner();
        if !(1..=Email::MAX).contains(&req.login.chars().count()) {
            return Err(invalid(FieldError::new(
                "login",
                "must be 1 to 254 characters",
            )));
        }
        if req.password.chars().count() > Password::MAX {
            return Err(Status::unauthenticated("invalid credentials"));
        }
        let found = self
            .store
            .credentials(&req.login)
            .await
            .map_err(store_status)?;
        let (user, hash) = match found {
            Some(c) => (Some(c.user), Some(c.password_hash)),
            None => (None, None),
        };
        let ok = self
            .hasher
            .verify(req.password, hash)
            .await
            .map_err(|e| hash_status(e, "could not check the password"))?;
        match (ok, user) {
            (true, Some(user)) => Ok(Response::new(to_proto(user))),
            _ => Err(Status::unauthenticated("invalid credentials")),
        }
    }

    type ExportUsersStream = ExportStream<pb::User>;

    async fn export_users(
        &self,
        request: Request<pb::ExportUsersRequest>,
    ) -> Result<Response<Self::ExportUsersStream>, Status> {
        let page = export_page(request.into_inner().page_size);
        let store = self.store.clone();
        Ok(Response::new(export(page, move |after, limit| {
            let store = store.clone();
            async move {
                let users = store
                    .users_after(after, limit)
                    .await
                    .map_err(store_status)?;
                Ok(users.into_iter().map(|u| (u.id, to_proto(u))).collect())
            }
        })))
    }

    type ExportEventsStream = ExportStream<pb::StoredEvent>;

    async fn export_events(
        &self,
        request: Request<pb::ExportEventsRequest>,
    ) -> Result<Response<Self::ExportEventsStream>, Status> {
        let req = request.into_inner();
        let start = i64::try_from(req.after_position)
            .map_err(|_| invalid(FieldError::new("after_position", "is out of range")))?;
        let page = export_page(req.page_size);
        let store = self.store.clone();
        Ok(Response::new(export(page, move |after, limit| {
            let store = store.clone();
            async move {
                let events = store
                    .events_after(after.max(start), limit)
                    .await
                    .map_err(store_status)?;
                Ok(events
                    .into_iter()
                    .map(|e| (e.position, event_to_proto(e)))
                    .collect())
            }
        })))
    }

    async fn rebuild_read_models(
        &self,
        _request: Request<pb::RebuildReadModelsRequest>,
    ) -> Result<Response<pb::RebuildReadModelsResponse>, Status> {
        let applied = self
            .store
            .rebuild_read_models()
            .await
            .map_err(store_status)?;
        self.views.invalidate_all().await;
        tracing::info!(applied, "read models rebuilt from the event log");
        Ok(Response::new(pb::RebuildReadModelsResponse {
            events_applied: applied,
        }))
    }

    async fn retry_parked_events(
        &self,
        request: Request<pb::RetryParkedEventsRequest>,
    ) -> Result<Response<pb::RetryParkedEventsResponse>, Status> {
        let parked = self.store.parked_outbox().await.map_err(store_status)?;
        let retried = if request.into_inner().retry {
            let n = self.store.retry_parked().await.map_err(store_status)?;
            tracing::info!(retried = n, "parked outbox events put back in the queue");
            self.store.events_queued_notify();
            n
        } else {
            0
        };
        Ok(Response::new(pb::RetryParkedEventsResponse {
            parked: parked
                .into_iter()
                .map(|(position, attempts, last_error)| pb::ParkedEvent {
                    position,
                    attempts,
                    last_error,
                })
                .collect(),
            retried,
        }))
    }
}
