//! The event store and the read models, in PostgreSQL (production) or a
//! SQLite file (embedded default), chosen by `DATABASE_URL`.
//!
//! Every change is one transaction that appends the event (with optimistic
//! concurrency on the aggregate's version), applies it to the read models
//! and queues it in the outbox. Reads never touch the event log. Both
//! backends run the same SQL through sqlx's `Any` driver; only the
//! migrations differ (see `migrations/`).

mod idempotency;
mod journal;
mod migrations;
mod posts;
mod users;

use sqlx::{AnyPool, Row};

pub use idempotency::{Idempotency, Replay};
pub use journal::{OutboxEntry, StoredEvent};
pub use posts::{Comment, Post};
pub use users::{Credentials, NewUser, User, UserChanges};

use crate::events::DecodeError;

pub use common::db::{Backend, DatabaseTimeouts};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} {id} does not exist")]
    NotFound { entity: &'static str, id: i64 },
    #[error("{field} is already taken")]
    Taken { field: &'static str },
    #[error("{entity} {id} is no longer at version {expected}; read it again and retry")]
    Conflict {
        entity: &'static str,
        id: i64,
        expected: i64,
    },
    #[error("the database URL must start with postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl,
    /// Another request with the same idempotency key committed first; its
    /// answer is now on record.
    #[error("a request with this idempotency key was just answered")]
    IdempotencyRace,
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The same failure, shared by every caller of one coalesced cache load.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
    #[error("stored event at position {position} cannot be read")]
    Corrupt {
        position: i64,
        #[source]
        source: DecodeError,
    },
}

/// Connection to one database, migrated and ready.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Signalled after every commit that queued events, so the relay
    /// publishes at once instead of at its next poll.
    queued: std::sync::Arc<tokio::sync::Notify>,
}

impl From<common::db::DbError> for StoreError {
    fn from(error: common::db::DbError) -> Self {
        match error {
            common::db::DbError::UnsupportedUrl => Self::UnsupportedUrl,
            common::db::DbError::Database(e) => Self::Database(e),
            common::db::DbError::Migrate(e) => Self::Migrate(e),
        }
    }
}

impl Store {
    /// Connects, creating a SQLite file if needed, and runs migrations,
    /// with the default [`DatabaseTimeouts`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_with(url, max_connections, DatabaseTimeouts::default()).await
    }

    /// As [`Store::connect`]: waiting for a pooled (or new) connection gives
    /// up after `timeouts.acquire`; on PostgreSQL each statement is
    /// cancelled by the server after `timeouts.statement`.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        timeouts: DatabaseTimeouts,
    ) -> Result<Self, StoreError> {
        let (pool, backend) =
            common::db::connect(url, max_connections, timeouts, migrations::ALL).await?;
        Ok(Self {
            pool,
            backend,
            queued: std::sync::Arc::default(),
        })
    }

    /// Commits a command's transaction and wakes the outbox relay.
    async fn commit(&self, tx: sqlx::Transaction<'static, sqlx::Any>) -> Result<(), StoreError> {
        tx.commit().await?;
        self.queued.notify_one();
        Ok(())
    }

    /// Resolves when events have been queued since the last call (at once
    /// if that happened while nobody was waiting).
    pub async fn events_queued(&self) {
        self.queued.notified().await;
    }

    /// Wakes the relay: events became publishable without a command
    /// (parked ones put back).
    pub fn events_queued_notify(&self) {
        self.queued.notify_one();
    }

    #[cfg(feature = "test-util")]
    pub(crate) fn pool(&self) -> &sqlx::AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers; for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// `sqlite:path` with the file (and its directory) created when missing.
/// Which unique constraint a database error violated, if any.
fn unique_violation(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) if db.is_unique_violation() => Some(
            db.constraint()
                .map(str::to_owned)
                .unwrap_or_else(|| db.message().to_owned()),
        ),
        _ => None,
    }
}

fn count(row: &sqlx::any::AnyRow) -> Result<i64, sqlx::Error> {
    row.try_get::<i64, _>(0)
}
