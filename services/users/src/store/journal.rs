//! Appending events, applying them to the read models, the outbox, and
//! rebuilding the read models from the log.
//!
//! `apply` is the only code that writes read models, for live commands and
//! for replay alike, which is what makes a replay reproduce them exactly.

use std::time::SystemTime;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError, unique_violation};
use crate::events::{DomainEvent, SCHEMA_VERSION};

/// An event as recorded in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub position: i64,
    pub event_id: String,
    pub aggregate_type: String,
    pub aggregate_id: i64,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: String,
    pub traceparent: Option<String>,
    pub occurred_at: String,
}

impl StoredEvent {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            position: row.try_get("position")?,
            event_id: row.try_get("event_id")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            version: row.try_get("version")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            payload: row.try_get("payload")?,
            traceparent: row.try_get("traceparent")?,
            occurred_at: row.try_get("occurred_at")?,
        })
    }

    pub fn decode(&self) -> Result<DomainEvent, StoreError> {
        DomainEvent::decode(&self.event_type, &self.payload).map_err(|source| StoreError::Corrupt {
            position: self.position,
            source,
        })
    }
}

/// An event waiting in the outbox for the relay.
#[derive(Clone, Debug)]
pub struct OutboxEntry {
    pub topic: String,
    pub event: StoredEvent,
}

const EVENT_COLUMNS: &str = "e.position, e.event_id, e.aggregate_type, e.aggregate_id, e.version, \
     e.event_type, e.schema_version, e.payload, e.traceparent, e.occurred_at";

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Appends `event` as version `version` of its aggregate, applies it and
/// queues it for publishing, all inside `tx`.
pub(super) async fn record(
    tx: &mut Transaction<'static, Any>,
    event: &DomainEvent,
    version: i64,
    traceparent: Option<&str>,
) -> Result<StoredEvent, StoreError> {
    let (aggregate, id) = event.aggregate();
    let occurred_at = now_rfc3339();
    let event_id = uuid::Uuid::now_v7().to_string();
    let inserted = sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_type, \
         schema_version, payload, traceparent, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING position",
    )
    .bind(&event_id)
    .bind(aggregate.as_str())
    .bind(id)
    .bind(version)
    .bind(event.event_type())
    .bind(SCHEMA_VERSION)
    .bind(event.payload())
    .bind(traceparent)
    .bind(&occurred_at)
    .fetch_one(&mut **tx)
    .await;
    let position: i64 = match inserted {
        Ok(row) => row.try_get(0)?,
        // Another transaction appended this version first. (The failed
        // statement aborts a PostgreSQL transaction, so nothing more can be
        // asked inside it.)
        Err(error)
            if unique_violation(&error)
                .is_some_and(|c| c.contains("version") || c.contains("events")) =>
        {
            return Err(StoreError::Conflict {
                entity: aggregate.as_str(),
                id,
                expected: version - 1,
            });
        }
        Err(error) => return Err(error.into()),
    };
    apply(tx, event, version, &occurred_at).await?;
    sqlx::query("INSERT INTO outbox (position, topic, created_at_ms) VALUES ($1, $2, $3)")
        .bind(position)
        .bind(aggregate.topic())
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(StoredEvent {
        position,
        event_id,
        aggregate_type: aggregate.as_str().to_owned(),
        aggregate_id: id,
        version,
        event_type: event.event_type().to_owned(),
        schema_version: SCHEMA_VERSION,
        payload: event.payload(),
        traceparent: traceparent.map(str::to_owned),
        occurred_at,
    })
}

/// A fresh id for a new aggregate.
pub(super) async fn next_id(
    tx: &mut Transaction<'static, Any>,
    aggregate_type: &str,
) -> Result<i64, StoreError> {
    let row = sqlx::query("INSERT INTO aggregate_ids (aggregate_type) VALUES ($1) RETURNING id")
        .bind(aggregate_type)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get(0)?)
}

/// The read-model effect of one event.
async fn apply(
    tx: &mut Transaction<'static, Any>,
    event: &DomainEvent,
    version: i64,
    at: &str,
) -> Result<(), StoreError> {
    let conn = &mut **tx;
    let result = match event {
        DomainEvent::UserCreated(u) => {
            sqlx::query(
                "INSERT INTO users (id, username, username_key, email, email_key, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(u.id)
            .bind(&u.username)
            .bind(u.username.to_ascii_lowercase())
            .bind(&u.email)
            .bind(u.email.to_ascii_lowercase())
            .bind(version)
            .bind(at)
            .execute(conn)
            .await
        }
        DomainEvent::UserUpdated(u) => {
            sqlx::query(
                "UPDATE users SET username = $2, username_key = $3, email = $4, email_key = $5, \
                 version = $6, updated_at = $7 WHERE id = $1",
            )
            .bind(u.id)
            .bind(&u.username)
            .bind(u.username.to_ascii_lowercase())
            .bind(&u.email)
            .bind(u.email.to_ascii_lowercase())
            .bind(version)
            .bind(at)
            .execute(conn)
            .await
        }
        DomainEvent::UserDeleted(d) => {
            sqlx::query("DELETE FROM users WHERE id = $1").bind(d.id).execute(conn).await
        }
        DomainEvent::PostCreated(p) => {
            sqlx::query(
                "INSERT INTO posts (id, title, content, author_id, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(p.id)
            .bind(&p.title)
            .bind(&p.content)
            .bind(p.author_id)
            .bind(version)
            .bind(at)
            .execute(conn)
            .await
        }
        DomainEvent::PostUpdated(p) => {
            sqlx::query(
                "UPDATE posts SET title = $2, content = $3, version = $4, updated_at = $5 WHERE id = $1",
            )
            .bind(p.id)
            .bind(&p.title)
            .bind(&p.content)
            .bind(version)
            .bind(at)
            .execute(conn)
            .await
        }
        DomainEvent::PostDeleted(d) => {
            // A post takes its comments with it: no comment outlives the
            // post it answers (and a rebuild from the journal agrees).
            sqlx::query("DELETE FROM comments WHERE post_id = $1")
                .bind(d.id)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM posts WHERE id = $1").bind(d.id).execute(conn).await
        }
        DomainEvent::CommentAdded(c) => {
            sqlx::query(
                "INSERT INTO comments (id, content, author_id, post_id, version, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(c.id)
            .bind(&c.content)
            .bind(c.author_id)
            .bind(c.post_id)
            .bind(version)
            .bind(at)
            .execute(conn)
            .await
        }
        DomainEvent::CommentUpdated(c) => {
            sqlx::query("UPDATE comments SET content = $2, version = $3 WHERE id = $1")
                .bind(c.id)
                .bind(&c.content)
                .bind(version)
                .execute(conn)
                .await
        }
        DomainEvent::CommentDeleted(d) => {
            sqlx::query("DELETE FROM comments WHERE id = $1").bind(d.id).execute(conn).await
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(error) => match unique_violation(&error) {
            Some(c) if c.contains("username") => Err(StoreError::Taken { field: "username" }),
            Some(c) if c.contains("email") => Err(StoreError::Taken { field: "email" }),
            _ => Err(error.into()),
        },
    }
}

impl Store {
    /// Events after `position`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        position: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.position > $1 ORDER BY e.position LIMIT $2"
        ))
        .bind(position)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(StoredEvent::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Unsent outbox entries, oldest first.
    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT o.topic, {EVENT_COLUMNS} FROM outbox o JOIN events e ON e.position = o.position \
             WHERE o.sent_at_ms IS NULL AND o.parked_at_ms IS NULL ORDER BY o.position LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxEntry {
                    topic: row.try_get("topic")?,
                    event: StoredEvent::from_row(row)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Marks entries as published, if `holder` still holds an unexpired
    /// relay lease; false (nothing marked) when it does not: another
    /// replica has taken over and publishes them itself, and a relay that
    /// lost its lease mid-publish must not record its late results.
    pub async fn mark_sent(&self, positions: &[i64], holder: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let at = now_ms();
        for position in positions {
            let marked = sqlx::query(
                "UPDATE outbox SET sent_at_ms = $2 WHERE position = $1 AND EXISTS \
                 (SELECT 1 FROM relay_lease WHERE id = 1 AND holder = $3 AND expires_at_ms >= $2)",
            )
            .bind(*position)
            .bind(at)
            .bind(holder)
            .execute(&mut *tx)
            .await?;
            if marked.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Counts a failed publish of `position`; parks the entry once it has
    /// failed `max_attempts` times. True when it is parked now.
    pub async fn record_publish_failure(
        &self,
        position: i64,
        error: &str,
        max_attempts: i32,
    ) -> Result<bool, StoreError> {
        let error: String = error.chars().take(1000).collect();
        let row = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2, \
             parked_at_ms = CASE WHEN attempts + 1 >= $3 THEN $4 ELSE NULL END \
             WHERE position = $1 RETURNING parked_at_ms",
        )
        .bind(position)
        .bind(error)
        .bind(max_attempts)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<i64>, _>(0)?.is_some(),
            None => false,
        })
    }

    /// Parked entries, oldest first: position, attempts, last error.
    pub async fn parked_outbox(&self) -> Result<Vec<(i64, i32, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, attempts, last_error FROM outbox \
             WHERE parked_at_ms IS NOT NULL ORDER BY position",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Puts every parked entry back in the queue with a fresh count; how
    /// many there were.
    pub async fn retry_parked(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET parked_at_ms = NULL, attempts = 0 WHERE parked_at_ms IS NOT NULL",
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Forgets outbox rows sent more than `retention` ago (the events stay
    /// in the log); how many.
    pub async fn prune_sent(&self, retention: std::time::Duration) -> Result<u64, StoreError> {
        let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
        let done =
            sqlx::query("DELETE FROM outbox WHERE sent_at_ms IS NOT NULL AND sent_at_ms < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// Takes or renews the relay lease for `holder`; true when it holds it.
    pub async fn try_lead(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let until = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let result = sqlx::query(
            "UPDATE relay_lease SET holder = $1, expires_at_ms = $2 \
             WHERE id = 1 AND (holder = $1 OR expires_at_ms < $3)",
        )
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Gives the lease up (on shutdown), so another replica need not wait
    /// for it to expire.
    pub async fn release_lead(&self, holder: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE relay_lease SET expires_at_ms = 0 WHERE id = 1 AND holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Age in milliseconds of the oldest unsent event, 0 when none wait.
    pub async fn outbox_lag_ms(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(created_at_ms) FROM outbox WHERE sent_at_ms IS NULL AND parked_at_ms IS NULL",
        )
            .fetch_one(&self.pool)
            .await?;
        let oldest: Option<i64> = row.try_get(0)?;
        Ok(oldest.map_or(0, |t| (now_ms() - t).max(0)))
    }

    /// Rebuilds users, posts and comments from the event log in one
    /// transaction: readers see the old models until it commits.
    pub async fn rebuild_read_models(&self) -> Result<u64, StoreError> {
        const BATCH: i64 = 500;
        let mut tx = self.pool.begin().await?;
        for table in ["comments", "posts", "users"] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await?;
        }
        let mut after = 0;
        let mut applied = 0;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {EVENT_COLUMNS} FROM events e WHERE e.position > $1 ORDER BY e.position LIMIT $2"
            ))
            .bind(after)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let stored = StoredEvent::from_row(row)?;
                apply(
                    &mut tx,
                    &stored.decode()?,
                    stored.version,
                    &stored.occurred_at,
                )
                .await?;
                after = stored.position;
                applied += 1;
            }
        }
        tx.commit().await?;
        Ok(applied)
    }
}
