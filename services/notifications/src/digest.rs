//! The daily digest: notifications of the topics a user chose to digest
//! are held, and a recurring job (`NOTIFICATIONS_DIGEST_SCHEDULE`, once
//! across the replicas) turns each user's held ones into one notification
//! that summarises them.
//!
//! Each user's items are taken with `DELETE … RETURNING` in the
//! transaction that stores their summary, so a run repeated (the job is
//! at-least-once) or overlapping another summarises each item once.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::Row;

use common::jobs::{JobFailure, JobRecord};

use crate::App;
use crate::store::{Kind, NewNotification, Notification, Store, StoreError, Topic, now_ms};

/// The job kind the schedule enqueues.
pub const JOB_KIND: &str = "notifications.digest";

/// Users summarised per query, so one run never loads every user at once.
const USERS_PER_BATCH: i64 = 200;

/// Holds `new` for its user's next digest.
pub(crate) async fn hold(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    new: &NewNotification,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO digest_items (user_id, topic, title, message, created_at_ms)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(new.user_id)
    .bind(new.topic.as_str())
    .bind(&new.title)
    .bind(&new.message)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// "2 comments, 1 mention", in topic order.
fn summary(counts: &BTreeMap<&'static str, usize>) -> String {
    counts
        .iter()
        .map(|(topic, n)| format!("{n} {topic}{}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Summarises `user`'s held notifications into one, stored (and put in
    /// their webhooks' outbox) in the transaction that takes them; `None`
    /// when nothing was held.
    /// Only items up to `up_to` (held when the run began) are taken: what
    /// arrives during a run waits for the next day's.
    pub async fn summarise(
        &self,
        user: i64,
        up_to: i64,
    ) -> Result<Option<Notification>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "DELETE FROM digest_items WHERE user_id = $1 AND id <= $2 RETURNING id, topic, message",
        )
        .bind(user)
        .bind(up_to)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut counts = BTreeMap::new();
        let mut latest: Option<(i64, String)> = None;
        for row in &rows {
            let topic: String = row.try_get("topic")?;
            let id: i64 = row.try_get("id")?;
            let topic = Topic::parse(&topic).unwrap_or(Topic::System).as_str();
            *counts.entry(topic).or_insert(0) += 1;
            if latest.as_ref().is_none_or(|(at, _)| id > *at) {
                latest = Some((id, row.try_get("message")?));
            }
        }
        let latest = latest.map(|(_, message)| message).unwrap_or_default();
        let new = NewNotification {
            user_id: user,
            kind: Kind::Info,
            topic: Topic::Digest,
            title: format!("Your daily digest: {} notifications", rows.len()),
            message: format!("{}. Latest: {latest}", summary(&counts)),
        };
        let stored = crate::store::insert_now(&mut tx, &new, None).await?;
        crate::webhooks::store::outbox(&mut tx, &stored).await?;
        tx.commit().await?;
        Ok(Some(stored))
    }

    /// The newest held item's id (0 for none).
    async fn digest_high_water(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS high FROM digest_items")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("high")?)
    }

    /// Up to [`USERS_PER_BATCH`] users after `after` with items up to
    /// `up_to` held.
    async fn digest_users(&self, after: i64, up_to: i64) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT user_id FROM digest_items WHERE user_id > $1 AND id <= $2
             ORDER BY user_id LIMIT $3",
        )
        .bind(after)
        .bind(up_to)
        .bind(USERS_PER_BATCH)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get("user_id"))
            .collect::<Result<_, _>>()?)
    }
}

/// The digest job: every user with held notifications gets their summary.
pub async fn run(app: Arc<App>, _job: &JobRecord) -> Result<(), JobFailure> {
    // One pass over the users, each once, with what was held when it
    // began: a steady inflow cannot keep the run going.
    let up_to = app
        .store
        .digest_high_water()
        .await
        .map_err(JobFailure::retry)?;
    let mut after = 0;
    loop {
        let users = app
            .store
            .digest_users(after, up_to)
            .await
            .map_err(JobFailure::retry)?;
        let Some(&last) = users.last() else {
            return Ok(());
        };
        for user in users {
            let summary = app
                .store
                .summarise(user, up_to)
                .await
                .map_err(JobFailure::retry)?;
            if let Some(stored) = summary {
                app.delivered(std::slice::from_ref(&stored)).await;
            }
        }
        after = last;
    }
}
