//! Endpoints, deliveries and attempts in the notifications database.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::signing::Secret;
use crate::store::{Notification, Store, StoreError, now_ms, rfc3339};

/// A registered endpoint, as its owner sees it (the secret is shown once,
/// when made or rotated).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub enabled: bool,
    /// The first failure since the last success, if failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    pub created_at: String,
}

/// One notification to one endpoint, and its attempts so far.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    /// The `webhook-id` header: the same on every attempt and re-send.
    pub id: String,
    pub webhook_id: i64,
    /// pending, retrying, delivered, dead or skipped (endpoint disabled).
    pub state: String,
    pub attempts: Vec<Attempt>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub at: String,
    /// The receiver's HTTP status; absent when none came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// What one attempt came to, before it is recorded.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: Option<u16>,
    /// Why it failed; `None` when delivered.
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// What a re-send did.
#[derive(Debug, PartialEq, Eq)]
pub enum Resend {
    Queued,
    Missing,
    /// Still pending or retrying: its own attempts go on.
    InFlight,
    /// The endpoint is disabled.
    Disabled,
}

/// What a delivery job needs to send.
pub struct Target {
    pub delivery: String,
    /// The re-send it belongs to: a job of an older one does nothing.
    pub generation: i64,
    pub webhook: i64,
    pub user: i64,
    pub url: String,
    pub payload: String,
    /// The current secret, then the previous one while its grace lasts.
    pub secrets: Vec<Secret>,
    pub enabled: bool,
}

const WEBHOOK_COLUMNS: &str = "id, url, enabled, failing_since_ms, created_at_ms";

fn webhook(row: &AnyRow) -> Result<Webhook, sqlx::Error> {
    let enabled: i32 = row.try_get("enabled")?;
    let failing: Option<i64> = row.try_get("failing_since_ms")?;
    Ok(Webhook {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        enabled: enabled != 0,
        failing_since: failing.map(rfc3339),
        created_at: rfc3339(row.try_get("created_at_ms")?),
    })
}

/// Writes one delivery of `notification` per enabled endpoint of its
/// user, in the transaction that stores it.
pub(crate) async fn outbox(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    notification: &Notification,
) -> Result<(), StoreError> {
    let hooks = sqlx::query("SELECT id FROM webhooks WHERE user_id = $1 AND enabled = 1")
        .bind(notification.user_id)
        .fetch_all(&mut **tx)
        .await?;
    if hooks.is_empty() {
        return Ok(());
    }
    // The Standard Webhooks payload shape: type, timestamp, data.
    let payload = serde_json::json!({
        "type": "notification.created",
        "timestamp": notification.created_at,
        "data": notification,
    })
    .to_string();
    let now = now_ms();
    for hook in &hooks {
        let webhook: i64 = hook.try_get("id")?;
        sqlx::query(
            "INSERT INTO webhook_deliveries
             (id, webhook_id, user_id, payload, state, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
        )
        .bind(format!("msg_{}", uuid::Uuid::now_v7().simple()))
        .bind(webhook)
        .bind(notification.user_id)
        .bind(&payload)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Registers `url` for `user` with `secret`; `None` when they already
    /// have `max` endpoints.
    pub async fn create_webhook(
        &self,
        user: i64,
        url: &str,
        secret: &Secret,
        max: usize,
    ) -> Result<Option<Webhook>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The user's counter row, locked until commit, orders their
        // creates: under READ COMMITTED two at once would both count
        // below the limit (SQLite's writer lock does the same there).
        sqlx::query(
            "INSERT INTO notification_seqs (user_id, last_seq) VALUES ($1, 0)
             ON CONFLICT (user_id) DO UPDATE SET last_seq = notification_seqs.last_seq",
        )
        .bind(user)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!(
            "INSERT INTO webhooks (user_id, url, secret, enabled, created_at_ms)
             SELECT $1, $2, $3, 1, $4
             WHERE (SELECT COUNT(*) FROM webhooks WHERE user_id = $1) < $5
             RETURNING {WEBHOOK_COLUMNS}"
        ))
        .bind(user)
        .bind(url)
        .bind(secret.expose())
        .bind(now_ms())
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(webhook).transpose()?)
    }

    pub async fn webhooks(&self, user: i64) -> Result<Vec<Webhook>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE user_id = $1 ORDER BY id"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(webhook).collect::<Result<_, _>>()?)
    }

    /// One of `user`'s endpoints; `None` for anyone else's.
    pub async fn webhook(&self, user: i64, id: i64) -> Result<Option<Webhook>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND user_id = $2"
        ))
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(webhook).transpose()?)
    }

    /// Deletes an endpoint and its deliveries; false when `user` has none
    /// such.
    pub async fn delete_webhook(&self, user: i64, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        for statement in [
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE webhook_id = $1)",
            "DELETE FROM webhook_deliveries WHERE webhook_id = $1",
        ] {
            sqlx::query(statement).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Makes `secret` the endpoint's, the old one signing too until
    /// `grace_until_ms`; false when `user` has no such endpoint.
    pub async fn rotate_webhook(
        &self,
        user: i64,
        id: i64,
        secret: &Secret,
        grace_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE webhooks SET previous_secret = secret, previous_until_ms = $1, secret = $2
             WHERE id = $3 AND user_id = $4",
        )
        .bind(grace_until_ms)
        .bind(secret.expose())
        .bind(id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Enables a disabled endpoint again, its failures forgotten.
    pub async fn enable_webhook(&self, user: i64, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE webhooks SET enabled = 1, failing_since_ms = NULL, last_failure_ms = NULL
             WHERE id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The endpoint's latest `limit` deliveries, newest first, with their
    /// attempts.
    pub async fn deliveries(&self, webhook: i64, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, webhook_id, state, created_at_ms, updated_at_ms FROM webhook_deliveries
             WHERE webhook_id = $1 ORDER BY created_at_ms DESC, id DESC LIMIT $2",
        )
        .bind(webhook)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let attempts = sqlx::query(
                "SELECT at_ms, status, error, duration_ms FROM webhook_attempts
                 WHERE delivery_id = $1 ORDER BY id LIMIT 100",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|a| {
                let status: Option<i32> = a.try_get("status")?;
                Ok(Attempt {
                    at: rfc3339(a.try_get("at_ms")?),
                    status: status.and_then(|s| u16::try_from(s).ok()),
                    error: a.try_get("error")?,
                    duration_ms: a.try_get("duration_ms")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            deliveries.push(Delivery {
                id,
                webhook_id: row.try_get("webhook_id")?,
                state: row.try_get("state")?,
                attempts,
                created_at: rfc3339(row.try_get("created_at_ms")?),
                updated_at: rfc3339(row.try_get("updated_at_ms")?),
            });
        }
        Ok(deliveries)
    }

    /// Hands a finished delivery (delivered, dead or skipped) of `user`'s
    /// enabled endpoint back to the relay as a new generation, to be sent
    /// again.
    pub async fn resend(
        &self,
        user: i64,
        webhook: i64,
        delivery: &str,
    ) -> Result<Resend, StoreError> {
        let row = sqlx::query(
            "SELECT w.enabled FROM webhook_deliveries d
             JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.id = $1 AND d.webhook_id = $2 AND d.user_id = $3",
        )
        .bind(delivery)
        .bind(webhook)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Resend::Missing);
        };
        if row.try_get::<i32, _>("enabled")? == 0 {
            return Ok(Resend::Disabled);
        }
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', queued = 0, claimed_until_ms = 0,
             generation = generation + 1, updated_at_ms = $1
             WHERE id = $2 AND state IN ('delivered', 'dead', 'skipped')",
        )
        .bind(now_ms())
        .bind(delivery)
        .execute(&self.pool)
        .await?;
        Ok(if done.rows_affected() == 1 {
            Resend::Queued
        } else {
            Resend::InFlight
        })
    }

    /// Forgets finished deliveries (and their attempts) last changed
    /// before `before_ms`; how many.
    pub async fn prune_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries
             WHERE state IN ('delivered', 'dead', 'skipped') AND updated_at_ms < $1)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries
             WHERE state IN ('delivered', 'dead', 'skipped') AND updated_at_ms < $1",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Claims up to `limit` deliveries no job carries yet, for `lease_ms`
    /// (another relay skips them meanwhile; a relay that dies lets the
    /// lease run out): their ids and generations.
    pub async fn claim_unqueued(
        &self,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT id, generation FROM webhook_deliveries
             WHERE queued = 0 AND claimed_until_ms < $1
             ORDER BY created_at_ms LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let generation: i32 = row.try_get("generation")?;
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET claimed_until_ms = $1
                 WHERE id = $2 AND queued = 0 AND claimed_until_ms < $3",
            )
            .bind(now + lease_ms)
            .bind(&id)
            .bind(now)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                claimed.push((id, i64::from(generation)));
            }
        }
        Ok(claimed)
    }

    /// A job carries the delivery now (`queued`), or it goes back to the
    /// relay (`!queued`).
    pub async fn set_queued(&self, delivery: &str, queued: bool) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET queued = $1, claimed_until_ms = 0 WHERE id = $2",
        )
        .bind(i32::from(queued))
        .bind(delivery)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What a delivery job sends; `None` once the delivery is gone (its
    /// endpoint deleted).
    pub async fn target(&self, delivery: &str) -> Result<Option<Target>, StoreError> {
        let row = sqlx::query(
            "SELECT d.id, d.generation, d.webhook_id, d.user_id, d.payload, w.url, w.secret,
                    w.previous_secret, w.previous_until_ms, w.enabled
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.id = $1",
        )
        .bind(delivery)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let bad = || sqlx::Error::Decode("a stored webhook secret does not parse".into());
        let mut secrets =
            vec![Secret::parse(&row.try_get::<String, _>("secret")?).map_err(|_| bad())?];
        let previous: Option<String> = row.try_get("previous_secret")?;
        let until: Option<i64> = row.try_get("previous_until_ms")?;
        if let (Some(previous), Some(until)) = (previous, until)
            && until > now_ms()
        {
            secrets.push(Secret::parse(&previous).map_err(|_| bad())?);
        }
        let enabled: i32 = row.try_get("enabled")?;
        let generation: i32 = row.try_get("generation")?;
        Ok(Some(Target {
            delivery: row.try_get("id")?,
            generation: i64::from(generation),
            webhook: row.try_get("webhook_id")?,
            user: row.try_get("user_id")?,
            url: row.try_get("url")?,
            payload: row.try_get("payload")?,
            secrets,
            enabled: enabled != 0,
        }))
    }

    /// Records one attempt and where the delivery stands after it.
    pub async fn record_attempt(
        &self,
        delivery: &str,
        attempt: &Outcome,
        at_ms: i64,
        state: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, at_ms, status, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(delivery)
        .bind(at_ms)
        .bind(attempt.status.map(i32::from))
        .bind(attempt.error.as_deref())
        .bind(attempt.duration_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, updated_at_ms = $2
             WHERE id = $3",
        )
        .bind(state)
        .bind(now_ms())
        .bind(delivery)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks a delivery skipped: its endpoint was disabled meanwhile.
    pub async fn skip_delivery(&self, delivery: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET state = 'skipped', updated_at_ms = $1 WHERE id = $2",
        )
        .bind(now_ms())
        .bind(delivery)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The endpoint answered: its failures are forgotten.
    pub async fn endpoint_succeeded(&self, webhook: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhooks SET failing_since_ms = NULL, last_failure_ms = NULL WHERE id = $1",
        )
        .bind(webhook)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The endpoint failed at `now`: true when this disables it (it has
    /// failed since `disable_after_ms` ago or longer). A failure more than
    /// `quiet_ms` after the one before starts a new window: an endpoint
    /// that failed once long ago, and was not tried since, is not failing
    /// "for a day".
    pub async fn endpoint_failed(
        &self,
        webhook: i64,
        now: i64,
        disable_after_ms: i64,
        quiet_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE webhooks SET failing_since_ms = CASE
                 WHEN failing_since_ms IS NULL OR last_failure_ms IS NULL OR last_failure_ms < $1
                 THEN $2 ELSE failing_since_ms END,
             last_failure_ms = $2
             WHERE id = $3",
        )
        .bind(now.saturating_sub(quiet_ms))
        .bind(now)
        .bind(webhook)
        .execute(&mut *tx)
        .await?;
        let disabled = sqlx::query(
            "UPDATE webhooks SET enabled = 0
             WHERE id = $1 AND enabled = 1 AND failing_since_ms <= $2",
        )
        .bind(webhook)
        .bind(now.saturating_sub(disable_after_ms))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(disabled.rows_affected() == 1)
    }
}
