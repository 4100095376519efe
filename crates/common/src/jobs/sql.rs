//! Jobs' records in the owning service's database: PostgreSQL, or the
//! SQLite file of an embedded service, through sqlx's `Any` driver (one
//! SQL text for both). Every replica of the service shares them, so a
//! unique key holds across replicas (a partial unique index over pending
//! jobs) and any replica answers for any job.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::model::{JobError, JobId, JobRecord, JobState};
use super::sql_batch::{Batcher, placeholders};
use super::store::{Inserted, JobStore, Outcome, Withdraw};

type Batch<R> = Pin<Box<dyn Future<Output = Result<Vec<R>, sqlx::Error>> + Send>>;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        max_attempts BIGINT NOT NULL,
        run_at_ms BIGINT NOT NULL,
        unique_key TEXT,
        last_error TEXT,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS jobs_pending_unique_key ON jobs (unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('queued', 'running', 'retrying')",
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id)",
    "CREATE TABLE IF NOT EXISTS job_schedules (
        name TEXT PRIMARY KEY,
        last_firing_ms BIGINT NOT NULL
    )",
];

const COLUMNS: &str = "id, kind, payload, state, attempts, max_attempts, run_at_ms, unique_key, \
                       last_error, created_at_ms, updated_at_ms";

/// Longest error text kept with a job.
const MAX_ERROR_CHARS: usize = 2000;

pub struct SqlJobStore {
    pool: AnyPool,
    backend: &'static str,
    /// The hot statements, group-committed: new jobs, starts (not
    /// takeovers), successes.
    inserts: Batcher<JobRecord, bool>,
    starts: Batcher<(JobId, i64), Option<JobRecord>>,
    successes: Batcher<(JobId, u32, i64), bool>,
}

fn shared_error(error: std::sync::Arc<sqlx::Error>) -> JobError {
    JobError::Store(Box::new(SharedError(error)))
}

/// One batch's failure, reported to each of its callers.
#[derive(Debug)]
struct SharedError(std::sync::Arc<sqlx::Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Inserts `jobs` in one statement; which were stored (the others met a
/// pending job's unique key).
fn insert_batch(pool: AnyPool, jobs: Vec<JobRecord>) -> Batch<bool> {
    Box::pin(async move {
        // In key order, so two replicas' batches that share keys wait on
        // each other in one direction, never in a cycle (a deadlock).
        let mut order: Vec<&JobRecord> = jobs.iter().collect();
        order.sort_by(|a, b| a.unique_key.cmp(&b.unique_key));
        let rows = (0..jobs.len())
            .map(|i| format!("({})", placeholders(i * 11 + 1, 11)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO jobs ({COLUMNS}) VALUES {rows} ON CONFLICT DO NOTHING RETURNING id"
        );
        let mut query = sqlx::query(&sql);
        for job in order {
            query = query
                .bind(job.id.to_string())
                .bind(job.kind.clone())
                .bind(job.payload.to_string())
                .bind(job.state.as_str())
                .bind(i64::from(job.attempts))
                .bind(i64::from(job.max_attempts))
                .bind(job.run_at_ms)
                .bind(job.unique_key.clone())
                .bind(job.last_error.clone())
                .bind(job.created_at_ms)
                .bind(job.updated_at_ms);
        }
        let inserted = query
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|row| row.try_get::<String, _>("id"))
            .collect::<Result<HashSet<_>, _>>()?;
        Ok(jobs
            .iter()
            .map(|job| inserted.contains(&job.id.to_string()))
            .collect())
    })
}

/// Starts runs of `jobs` in one statement. A job asked for twice in one
/// batch (two deliveries at once) starts once: the first asker gets it.
fn start_batch(pool: AnyPool, jobs: Vec<(JobId, i64)>) -> Batch<Option<JobRecord>> {
    Box::pin(async move {
        let now = jobs.iter().map(|(_, now)| *now).max().unwrap_or(0);
        let mut ids: Vec<String> = jobs.iter().map(|(id, _)| id.to_string()).collect();
        ids.sort_unstable();
        ids.dedup();
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at_ms = $1 \
             WHERE state IN ('queued', 'retrying') AND id IN ({}) RETURNING {COLUMNS}",
            placeholders(2, ids.len())
        );
        let mut query = sqlx::query(&sql).bind(now);
        for id in ids {
            query = query.bind(id);
        }
        let mut started: HashMap<JobId, JobRecord> = HashMap::new();
        for row in query.fetch_all(&pool).await? {
            let job = record(&row).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
            started.insert(job.id, job);
        }
        Ok(jobs.iter().map(|(id, _)| started.remove(id)).collect())
    })
}

/// Marks runs succeeded in one statement; which were still current.
fn success_batch(pool: AnyPool, runs: Vec<(JobId, u32, i64)>) -> Batch<bool> {
    Box::pin(async move {
        let now = runs.iter().map(|(_, _, now)| *now).max().unwrap_or(0);
        let matches = (0..runs.len())
            .map(|i| format!("(id = ${} AND attempts = ${})", i * 2 + 2, i * 2 + 3))
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "UPDATE jobs SET state = 'succeeded', updated_at_ms = $1 \
             WHERE state = 'running' AND ({matches}) RETURNING id, attempts"
        );
        let mut query = sqlx::query(&sql).bind(now);
        for (id, attempt, _) in &runs {
            query = query.bind(id.to_string()).bind(i64::from(*attempt));
        }
        let mut done = HashSet::new();
        for row in query.fetch_all(&pool).await? {
            let id: String = row.try_get("id")?;
            let attempts: i64 = row.try_get("attempts")?;
            done.insert((id, attempts));
        }
        Ok(runs
            .iter()
            .map(|(id, attempt, _)| done.contains(&(id.to_string(), i64::from(*attempt))))
            .collect())
    })
}

fn store_error(error: sqlx::Error) -> JobError {
    JobError::Store(Box::new(error))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// `error`, short enough to keep and without NUL (which PostgreSQL's text
/// refuses, and which would make the outcome unstorable).
fn cut(error: String) -> String {
    let error = if error.contains('\0') {
        error.replace('\0', "\u{fffd}")
    } else {
        error
    };
    match error.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => error[..at].to_owned(),
        None => error,
    }
}

fn record(row: &AnyRow) -> Result<JobRecord, JobError> {
    let bad = |what: &str| JobError::Store(format!("a stored job has a bad {what}").into());
    let id: String = row.try_get("id").map_err(store_error)?;
    let payload: String = row.try_get("payload").map_err(store_error)?;
    let state: String = row.try_get("state").map_err(store_error)?;
    let attempts: i64 = row.try_get("attempts").map_err(store_error)?;
    let max_attempts: i64 = row.try_get("max_attempts").map_err(store_error)?;
    Ok(JobRecord {
        id: id.parse().map_err(|_| bad("id"))?,
        kind: row.try_get("kind").map_err(store_error)?,
        payload: serde_json::from_str(&payload).map_err(|_| bad("payload"))?,
        state: state.parse().map_err(|_| bad("state"))?,
        attempts: u32::try_from(attempts).map_err(|_| bad("attempts"))?,
        max_attempts: u32::try_from(max_attempts).map_err(|_| bad("max_attempts"))?,
        run_at_ms: row.try_get("run_at_ms").map_err(store_error)?,
        unique_key: row.try_get("unique_key").map_err(store_error)?,
        last_error: row.try_get("last_error").map_err(store_error)?,
        created_at_ms: row.try_get("created_at_ms").map_err(store_error)?,
        updated_at_ms: row.try_get("updated_at_ms").map_err(store_error)?,
    })
}

impl SqlJobStore {
    /// Uses `pool` (the service's own) and creates the `jobs` table if it
    /// is not there.
    pub async fn new(pool: AnyPool) -> Result<Self, JobError> {
        let backend = if pool.connect_options().database_url.scheme() == "sqlite" {
            "sqlite"
        } else {
            "postgres"
        };
        for statement in SCHEMA {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .map_err(store_error)?;
        }
        Ok(Self {
            inserts: Batcher::spawn(pool.clone(), insert_batch),
            starts: Batcher::spawn(pool.clone(), start_batch),
            successes: Batcher::spawn(pool.clone(), success_batch),
            pool,
            backend,
        })
    }

    async fn pending_with_key(&self, key: &str) -> Result<Option<JobRecord>, JobError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE unique_key = $1 \
             AND state IN ('queued', 'running', 'retrying')"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(record).transpose()
    }
}

#[async_trait]
impl JobStore for SqlJobStore {
    fn backend(&self) -> &'static str {
        self.backend
    }

    async fn insert(&self, job: &JobRecord) -> Result<Inserted, JobError> {
        // Twice at most: a holder of the key found by the insert may have
        // finished before the read that looks for it.
        for _ in 0..2 {
            if self.inserts.call(job.clone()).await.map_err(shared_error)? {
                return Ok(Inserted::New);
            }
            let Some(key) = &job.unique_key else {
                return Err(JobError::Store(format!("job {} exists", job.id).into()));
            };
            if let Some(existing) = self.pending_with_key(key).await? {
                return Ok(Inserted::Existing(existing));
            }
        }
        Err(JobError::Unavailable(
            "the job's unique key is being taken and released; try again".into(),
        ))
    }

    async fn withdraw(&self, id: JobId, to: Withdraw) -> Result<bool, JobError> {
        let untouched = "id = $1 AND state = 'queued' AND attempts = 0";
        let done = match to {
            Withdraw::Delete => {
                sqlx::query(&format!("DELETE FROM jobs WHERE {untouched}"))
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await
            }
            Withdraw::Dead { error } => {
                sqlx::query(&format!(
                    "UPDATE jobs SET state = 'dead', last_error = $2, updated_at_ms = $3 \
                 WHERE {untouched}"
                ))
                .bind(id.to_string())
                .bind(cut(error))
                .bind(super::model::now_ms())
                .execute(&self.pool)
                .await
            }
        }
        .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, JobError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.as_ref().map(record).transpose()
    }

    async fn list(
        &self,
        state: Option<JobState>,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE ($1 IS NULL OR state = $1) AND id > $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(state.map(JobState::as_str))
        .bind(after.map_or_else(String::new, |id| id.to_string()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(record).collect()
    }

    async fn start(
        &self,
        id: JobId,
        takeover: bool,
        now_ms: i64,
    ) -> Result<Option<JobRecord>, JobError> {
        if !takeover {
            return self.starts.call((id, now_ms)).await.map_err(shared_error);
        }
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at_ms = $2 \
             WHERE id = $1 AND (state IN ('queued', 'retrying') OR ($3 AND state = 'running')) \
             RETURNING {COLUMNS}"
        ))
        .bind(id.to_string())
        .bind(now_ms)
        .bind(takeover)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        row.as_ref().map(record).transpose()
    }

    async fn finish(
        &self,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
        now_ms: i64,
    ) -> Result<bool, JobError> {
        if outcome == Outcome::Succeeded {
            return self
                .successes
                .call((id, attempt, now_ms))
                .await
                .map_err(shared_error);
        }
        let (sql, run_at, error) = match outcome {
            Outcome::Succeeded => (
                "UPDATE jobs SET state = 'succeeded', updated_at_ms = $3 \
                 WHERE id = $1 AND state = 'running' AND attempts = $2",
                None,
                None,
            ),
            Outcome::Retry { run_at_ms, error } => (
                "UPDATE jobs SET state = 'retrying', updated_at_ms = $3, last_error = $4, \
                 run_at_ms = $5 WHERE id = $1 AND state = 'running' AND attempts = $2",
                Some(run_at_ms),
                Some(cut(error)),
            ),
            Outcome::Dead { error } => (
                "UPDATE jobs SET state = 'dead', updated_at_ms = $3, last_error = $4 \
                 WHERE id = $1 AND state = 'running' AND attempts = $2",
                None,
                Some(cut(error)),
            ),
            Outcome::Released => (
                "UPDATE jobs SET state = 'queued', updated_at_ms = $3, attempts = attempts - 1 \
                 WHERE id = $1 AND state = 'running' AND attempts = $2",
                None,
                None,
            ),
        };
        let mut query = sqlx::query(sql)
            .bind(id.to_string())
            .bind(i64::from(attempt))
            .bind(now_ms);
        if let Some(error) = error {
            query = query.bind(error);
        }
        if let Some(run_at) = run_at {
            query = query.bind(run_at);
        }
        let done = query.execute(&self.pool).await.map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revive(&self, id: JobId, now_ms: i64) -> Result<Option<JobRecord>, JobError> {
        let revive = |key: &'static str| {
            format!(
                "UPDATE jobs SET state = 'queued', attempts = 0, run_at_ms = $2, \
                 updated_at_ms = $2, unique_key = {key} \
                 WHERE id = $1 AND state = 'dead' RETURNING {COLUMNS}"
            )
        };
        let (keeping, dropping) = (revive("unique_key"), revive("NULL"));
        let run = |sql: &str| {
            let sql = sql.to_owned();
            let pool = self.pool.clone();
            async move {
                sqlx::query(&sql)
                    .bind(id.to_string())
                    .bind(now_ms)
                    .fetch_optional(&pool)
                    .await
            }
        };
        let row = match run(&keeping).await {
            Ok(row) => row,
            // A newer job holds its key: the revived one runs without it.
            Err(error) if is_unique_violation(&error) => {
                run(&dropping).await.map_err(store_error)?
            }
            Err(error) => return Err(store_error(error)),
        };
        row.as_ref().map(record).transpose()
    }

    async fn discard(&self, id: JobId, now_ms: i64) -> Result<bool, JobError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'discarded', updated_at_ms = $2 \
             WHERE id = $1 AND state IN ('dead', 'queued', 'retrying')",
        )
        .bind(id.to_string())
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn counts(&self) -> Result<Vec<(JobState, u64)>, JobError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut counts: Vec<(JobState, u64)> = JobState::ALL.into_iter().map(|s| (s, 0)).collect();
        for row in rows {
            let state: String = row.try_get("state").map_err(store_error)?;
            let n: i64 = row.try_get("n").map_err(store_error)?;
            if let Ok(state) = state.parse::<JobState>()
                && let Some(entry) = counts.iter_mut().find(|(s, _)| *s == state)
            {
                entry.1 = u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    async fn pending(
        &self,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE state IN ('queued', 'running', 'retrying') \
             AND id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.map_or_else(String::new, |id| id.to_string()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(record).collect()
    }

    async fn overdue(
        &self,
        before_ms: i64,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobError> {
        // One statement: replicas sweeping at once split the jobs instead
        // of each announcing all of them.
        let rows = sqlx::query(&format!(
            "UPDATE jobs SET updated_at_ms = $2 WHERE id IN ( \
                 SELECT id FROM jobs WHERE state IN ('queued', 'retrying') \
                 AND run_at_ms < $1 AND updated_at_ms < $1 ORDER BY id LIMIT $3) \
             AND state IN ('queued', 'retrying') AND updated_at_ms < $1 \
             RETURNING {COLUMNS}"
        ))
        .bind(before_ms)
        .bind(now_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(record).collect()
    }

    async fn claim_firing(&self, name: &str, firing_ms: i64) -> Result<bool, JobError> {
        // One statement, so two replicas cannot both advance to a firing.
        let claimed = sqlx::query(
            "INSERT INTO job_schedules (name, last_firing_ms) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET last_firing_ms = excluded.last_firing_ms \
             WHERE job_schedules.last_firing_ms < excluded.last_firing_ms",
        )
        .bind(name)
        .bind(firing_ms)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(claimed.rows_affected() == 1)
    }

    async fn prune(&self, before_ms: i64) -> Result<u64, JobError> {
        let done = sqlx::query(
            "DELETE FROM jobs WHERE state IN ('succeeded', 'discarded', 'dead') \
             AND updated_at_ms < $1",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(done.rows_affected())
    }
}
