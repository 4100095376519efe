//! Notifications in PostgreSQL (production) or a SQLite file (the
//! embedded default), through `common::db`.
//!
//! A notification's `seq` numbers it within its user's notifications; it
//! is the `id:` of its server-sent event. The number is taken from the
//! user's row in `notification_seqs` in the inserting transaction, and
//! that row's lock orders one user's inserts: a notification is visible
//! only once every lower `seq` of its user is, so `Last-Event-ID: N` and
//! "everything after N" can never skip one that commits late.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use common::db::{Backend, DatabaseTimeouts, DbError};

const MIGRATIONS: common::db::Migrations = common::db::Migrations {
    postgres: &[
        (
            1,
            "notifications",
            include_str!("../migrations/postgres/0001_notifications.sql"),
        ),
        (
            2,
            "comments",
            include_str!("../migrations/postgres/0002_comments.sql"),
        ),
        (
            3,
            "preferences and webhooks",
            include_str!("../migrations/postgres/0003_preferences_webhooks.sql"),
        ),
    ],
    sqlite: &[
        (
            1,
            "notifications",
            include_str!("../migrations/sqlite/0001_notifications.sql"),
        ),
        (
            2,
            "comments",
            include_str!("../migrations/sqlite/0002_comments.sql"),
        ),
        (
            3,
            "preferences and webhooks",
            include_str!("../migrations/sqlite/0003_preferences_webhooks.sql"),
        ),
    ],
};

/// The seed's notification types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Info,
    Warning,
    Error,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "warning" => Self::Warning,
            "error" => Self::Error,
            _ => Self::Info,
        }
    }
}

/// What a notification is about: what a user's preferences choose by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topic {
    Welcome,
    /// A comment on one's post.
    Comment,
    /// A mention in a chat room.
    Mention,
    /// A file one uploaded.
    File,
    /// The daily summary of what was held for it.
    Digest,
    /// The platform's own notices (a webhook disabled).
    System,
}

impl Topic {
    /// The topics a user may mute or digest; the rest always arrive.
    pub const CHOOSABLE: [Self; 3] = [Self::Comment, Self::Mention, Self::File];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Welcome => "welcome",
            Self::Comment => "comment",
            Self::Mention => "mention",
            Self::File => "file",
            Self::Digest => "digest",
            Self::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Welcome,
            Self::Comment,
            Self::Mention,
            Self::File,
            Self::Digest,
            Self::System,
        ]
        .into_iter()
        .find(|topic| topic.as_str() == s)
    }
}

/// The seed's Notification, with its per-user number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Notification {
    pub id: i64,
    /// Its number among its user's notifications: the SSE event id.
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub topic: Topic,
    pub title: String,
    pub message: String,
    pub user_id: i64,
    pub read: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// What a notification says, before it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    pub user_id: i64,
    pub kind: Kind,
    pub topic: Topic,
    pub title: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the notifications database")]
    Open(#[from] DbError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// One page of a user's notifications, newest first.
#[derive(Debug, Serialize)]
pub struct Page {
    pub notifications: Vec<Notification>,
    /// Pass as `cursor` for the next (older) page; absent on the last one.
    pub next_cursor: Option<String>,
}

const COLUMNS: &str = "id, user_id, seq, kind, topic, title, message, is_read, created_at_ms";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the epoch as RFC 3339.
pub(crate) fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

fn from_row(row: &AnyRow) -> Result<Notification, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let topic: String = row.try_get("topic")?;
    let read: i32 = row.try_get("is_read")?;
    let created: i64 = row.try_get("created_at_ms")?;
    Ok(Notification {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        kind: Kind::parse(&kind),
        topic: Topic::parse(&topic).unwrap_or(Topic::System),
        title: row.try_get("title")?,
        message: row.try_get("message")?,
        user_id: row.try_get("user_id")?,
        read: read != 0,
        created_at: rfc3339(created),
    })
}

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

impl Store {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        timeouts: DatabaseTimeouts,
    ) -> Result<Self, StoreError> {
        let (pool, backend) =
            common::db::connect(url, max_connections, timeouts, MIGRATIONS).await?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database, for the job queue's records.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Stores `new`, numbered after the user's last one, unless their
    /// preferences mute its topic or hold it for the digest (`None`).
    pub async fn create(&self, new: &NewNotification) -> Result<Option<Notification>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let stored = insert(&mut tx, new, None).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Applies event `event_id` once: stores what `make` builds from it in
    /// the transaction that records the event as consumed, or nothing
    /// (`None`) if it was consumed before. `make` may build nothing (an
    /// event that notifies no one is still recorded).
    pub async fn apply_event(
        &self,
        event_id: &str,
        notifications: &[NewNotification],
    ) -> Result<Option<Vec<Notification>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !record_consumed(&mut tx, event_id).await? {
            return Ok(None);
        }
        let mut stored = Vec::with_capacity(notifications.len());
        for new in notifications {
            stored.extend(insert(&mut tx, new, Some(event_id)).await?);
        }
        tx.commit().await?;
        Ok(Some(stored))
    }

    /// `user`'s notifications, newest first, `limit` at most, older than
    /// `cursor` (from a previous page), unread ones only if asked.
    pub async fn list(
        &self,
        user: i64,
        unread_only: bool,
        cursor: Option<i64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let unread = if unread_only { " AND is_read = 0" } else { "" };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications
             WHERE user_id = $1 AND seq < $2{unread}
             ORDER BY seq DESC LIMIT $3"
        ))
        .bind(user)
        .bind(cursor.unwrap_or(i64::MAX))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut notifications = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if notifications.len() > limit as usize {
            notifications.truncate(limit as usize);
            notifications.last().map(|n| n.seq.to_string())
        } else {
            None
        };
        Ok(Page {
            notifications,
            next_cursor,
        })
    }

    /// `user`'s notifications numbered after `seq`, oldest first: what a
    /// stream that last saw `seq` missed.
    pub async fn after(
        &self,
        user: i64,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications
             WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(user)
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// The user's highest `seq` so far (0 for none).
    pub async fn last_seq(&self, user: i64) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT last_seq FROM notification_seqs WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get("last_seq")?,
            None => 0,
        })
    }

    /// One of `user`'s notifications; `None` for anyone else's.
    pub async fn get(&self, user: i64, id: i64) -> Result<Option<Notification>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE id = $1 AND user_id = $2"
        ))
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Marks one read; false when the user has no such notification.
    pub async fn mark_read(&self, user: i64, id: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE notifications SET is_read = 1 WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks every one of `user`'s read; how many were unread.
    pub async fn mark_all_read(&self, user: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("UPDATE notifications SET is_read = 1 WHERE user_id = $1 AND is_read = 0")
                .bind(user)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// Deletes one; false when the user has no such notification.
    pub async fn delete(&self, user: i64, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM notifications WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn unread_count(&self, user: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS unread FROM notifications WHERE user_id = $1 AND is_read = 0",
        )
        .bind(user)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("unread")?)
    }

    /// Records who wrote `post` (event `event_id`, once), and notifies
    /// them of the comments on it that arrived before it did.
    pub async fn post_created(
        &self,
        event_id: &str,
        post: i64,
        author: i64,
        title: &str,
    ) -> Result<Option<Vec<Notification>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !record_consumed(&mut tx, event_id).await? {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO post_authors (post_id, author_id, title) VALUES ($1, $2, $3)
             ON CONFLICT (post_id) DO UPDATE SET author_id = excluded.author_id, title = excluded.title",
        )
        .bind(post)
        .bind(author)
        .bind(title)
        .execute(&mut *tx)
        .await?;
        let pending = sqlx::query(
            "SELECT commenter_id, excerpt FROM pending_comments WHERE post_id = $1 ORDER BY event_id",
        )
        .bind(post)
        .fetch_all(&mut *tx)
        .await?;
        let mut stored = Vec::new();
        for row in &pending {
            let commenter: i64 = row.try_get("commenter_id")?;
            let excerpt: String = row.try_get("excerpt")?;
            if commenter != author {
                stored.extend(
                    insert(
                        &mut tx,
                        &comment_notice(author, title, &excerpt),
                        Some(event_id),
                    )
                    .await?,
                );
            }
        }
        sqlx::query("DELETE FROM pending_comments WHERE post_id = $1")
            .bind(post)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(stored))
    }

    /// Notifies the author of `post` of a comment by `commenter` (not of
    /// their own), once per event; keeps it for later if the post has not
    /// arrived yet.
    pub async fn comment_added(
        &self,
        event_id: &str,
        post: i64,
        commenter: i64,
        excerpt: &str,
    ) -> Result<Option<Vec<Notification>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !record_consumed(&mut tx, event_id).await? {
            return Ok(None);
        }
        let author = sqlx::query("SELECT author_id, title FROM post_authors WHERE post_id = $1")
            .bind(post)
            .fetch_optional(&mut *tx)
            .await?;
        let mut stored = Vec::new();
        match author {
            Some(row) => {
                let author: i64 = row.try_get("author_id")?;
                let title: String = row.try_get("title")?;
                if author != commenter {
                    stored.extend(
                        insert(
                            &mut tx,
                            &comment_notice(author, &title, excerpt),
                            Some(event_id),
                        )
                        .await?,
                    );
                }
            }
            None => {
                sqlx::query(
                    "INSERT INTO pending_comments (event_id, post_id, commenter_id, excerpt)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(event_id)
                .bind(post)
                .bind(commenter)
                .bind(excerpt)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Some(stored))
    }

    /// Forgets who wrote `post` (it is gone), once per event.
    pub async fn post_deleted(&self, event_id: &str, post: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !record_consumed(&mut tx, event_id).await? {
            return Ok(false);
        }
        for statement in [
            "DELETE FROM post_authors WHERE post_id = $1",
            "DELETE FROM pending_comments WHERE post_id = $1",
        ] {
            sqlx::query(statement).bind(post).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Forgets everything of `user`'s (their account is gone), recording
    /// `event_id` as consumed in the same transaction; false if it was.
    pub async fn forget_user(&self, event_id: &str, user: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !record_consumed(&mut tx, event_id).await? {
            return Ok(false);
        }
        for statement in [
            "DELETE FROM notifications WHERE user_id = $1",
            "DELETE FROM notification_seqs WHERE user_id = $1",
            "DELETE FROM notification_preferences WHERE user_id = $1",
            "DELETE FROM digest_items WHERE user_id = $1",
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE user_id = $1)",
            "DELETE FROM webhook_deliveries WHERE user_id = $1",
            "DELETE FROM webhooks WHERE user_id = $1",
        ] {
            sqlx::query(statement).bind(user).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// What a post's author is told of a comment.
fn comment_notice(author: i64, title: &str, excerpt: &str) -> NewNotification {
    NewNotification {
        user_id: author,
        kind: Kind::Info,
        topic: Topic::Comment,
        title: "New comment".into(),
        message: format!("On \"{title}\": {excerpt}"),
    }
}

/// Records `event_id` as consumed in `tx`; false if it already was.
async fn record_consumed(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    event_id: &str,
) -> Result<bool, StoreError> {
    let recorded = sqlx::query(
        "INSERT INTO consumed_events (event_id, consumed_at_ms) VALUES ($1, $2)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(recorded.rows_affected() == 1)
}

/// Stores `new` as its user's preferences say: numbered and handed to
/// their webhooks' outbox, held for the digest, or dropped (muted).
pub(crate) async fn insert(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    new: &NewNotification,
    event_id: Option<&str>,
) -> Result<Option<Notification>, StoreError> {
    match crate::preferences::mode(tx, new.user_id, new.topic).await? {
        crate::preferences::Mode::Instant => {}
        crate::preferences::Mode::Muted => {
            metrics::counter!("notifications_muted_total", "topic" => new.topic.as_str())
                .increment(1);
            return Ok(None);
        }
        crate::preferences::Mode::Digest => {
            crate::digest::hold(tx, new).await?;
            return Ok(None);
        }
    }
    let stored = insert_now(tx, new, event_id).await?;
    crate::webhooks::store::outbox(tx, &stored).await?;
    Ok(Some(stored))
}

/// Stores `new`, whatever the preferences.
pub(crate) async fn insert_now(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    new: &NewNotification,
    event_id: Option<&str>,
) -> Result<Notification, StoreError> {
    // Takes (and holds until commit) the user's counter row.
    let seq: i64 = sqlx::query(
        "INSERT INTO notification_seqs (user_id, last_seq) VALUES ($1, 1)
         ON CONFLICT (user_id) DO UPDATE SET last_seq = notification_seqs.last_seq + 1
         RETURNING last_seq",
    )
    .bind(new.user_id)
    .fetch_one(&mut **tx)
    .await?
    .try_get("last_seq")?;
    let row = sqlx::query(&format!(
        "INSERT INTO notifications (user_id, seq, kind, topic, title, message, is_read, created_at_ms, event_id)
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8) RETURNING {COLUMNS}"
    ))
    .bind(new.user_id)
    .bind(seq)
    .bind(new.kind.as_str())
    .bind(new.topic.as_str())
    .bind(&new.title)
    .bind(&new.message)
    .bind(now_ms())
    .bind(event_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(from_row(&row)?)
}
