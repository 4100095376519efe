//! `Idempotency-Key` records: the first answer to a create, kept with the
//! key so that a retry (a client whose connection broke, a gateway that
//! retried) gets the same answer and creates nothing.
//!
//! The record is written in the create's own transaction: either both the
//! create and its record commit, or neither does, so there is no window in
//! which the entity exists but a retry would make another. Two requests
//! with one key at once collide on the primary key; the loser reads the
//! winner's record. Records are scoped (a user, or for anonymous calls the
//! client's address) and pruned after a day.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError, unique_violation};

/// A request's key, whose it is, and what it asked (the fingerprint of
/// the request message: the same key with another body is refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    pub scope: String,
    pub key: String,
    pub method: &'static str,
    pub fingerprint: String,
}

/// What the record says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay<T> {
    /// Not seen: run it.
    New,
    /// Seen with the same request: this was the answer.
    Answered(T),
    /// Seen with another request (or another method): refused.
    Mismatch,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Records `answer` for `idempotency` inside `tx`; a concurrent request
/// with the same key that committed first turns this into
/// [`StoreError::IdempotencyRace`] (and aborts `tx`).
pub(super) async fn remember<T: Serialize>(
    tx: &mut Transaction<'static, Any>,
    idempotency: &Idempotency,
    answer: &T,
) -> Result<(), StoreError> {
    let response = serde_json::to_string(answer)
        .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, method, fingerprint, response, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&idempotency.scope)
    .bind(&idempotency.key)
    .bind(idempotency.method)
    .bind(&idempotency.fingerprint)
    .bind(response)
    .bind(now_ms())
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(error) if unique_violation(&error).is_some() => Err(StoreError::IdempotencyRace),
        Err(error) => Err(error.into()),
    }
}

impl Store {
    /// What is on record for `idempotency`.
    pub async fn replay<T: DeserializeOwned>(
        &self,
        idempotency: &Idempotency,
    ) -> Result<Replay<T>, StoreError> {
        let row = sqlx::query(
            "SELECT method, fingerprint, response FROM idempotency_keys \
             WHERE scope = $1 AND key = $2",
        )
        .bind(&idempotency.scope)
        .bind(&idempotency.key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Replay::New);
        };
        let method: String = row.try_get(0)?;
        let fingerprint: String = row.try_get(1)?;
        if method != idempotency.method || fingerprint != idempotency.fingerprint {
            return Ok(Replay::Mismatch);
        }
        let response: String = row.try_get(2)?;
        serde_json::from_str(&response)
            .map(Replay::Answered)
            .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
    }

    /// Forgets records older than `retention`; how many.
    pub async fn prune_idempotency(&self, retention: Duration) -> Result<u64, StoreError> {
        let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at_ms < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
