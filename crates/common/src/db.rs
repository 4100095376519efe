//! A service's relational database: PostgreSQL in production or a SQLite
//! file as the embedded default, chosen by its URL, through sqlx's `Any`
//! driver so one set of SQL serves both. Every pool is made here, with its
//! timeouts, and migrated from migrations compiled into the binary.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of(url: &str) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(DbError::UnsupportedUrl)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database URL must start with postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl,
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// How long a pool waits on its database (`<SERVICE>_DATABASE_ACQUIRE_TIMEOUT`,
/// `<SERVICE>_DATABASE_STATEMENT_TIMEOUT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatabaseTimeouts {
    /// For a connection from the pool (or a new one).
    pub acquire: Duration,
    /// For one statement, enforced by PostgreSQL.
    pub statement: Duration,
}

impl Default for DatabaseTimeouts {
    fn default() -> Self {
        Self {
            acquire: Duration::from_secs(5),
            statement: Duration::from_secs(30),
        }
    }
}

/// One backend's migrations, `(version, description, sql)` in order.
pub type MigrationList = &'static [(i64, &'static str, &'static str)];

/// A service's migrations for each backend (the SQL dialects differ).
#[derive(Clone, Copy, Debug)]
pub struct Migrations {
    pub postgres: MigrationList,
    pub sqlite: MigrationList,
}

/// Connects (creating a SQLite file and its directory if needed) and runs
/// `migrations`. Waiting for a pooled or new connection gives up after
/// `timeouts.acquire`; on PostgreSQL the server cancels each statement
/// after `timeouts.statement`. SQLite gets one connection: one writer at
/// a time is its model, and a single connection serialises transactions
/// instead of failing them with BUSY.
#[allow(clippy::disallowed_methods)] // the one place pools are made
pub async fn connect(
    url: &str,
    max_connections: u32,
    timeouts: DatabaseTimeouts,
    migrations: Migrations,
) -> Result<(AnyPool, Backend), DbError> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of(url)?;
    let options = match backend {
        Backend::Sqlite => AnyPoolOptions::new().max_connections(1),
        Backend::Postgres => {
            let statement_timeout = format!(
                "SET statement_timeout = {}",
                timeouts.statement.as_millis().max(1)
            );
            AnyPoolOptions::new()
                .max_connections(max_connections)
                .after_connect(move |conn, _| {
                    let statement_timeout = statement_timeout.clone();
                    Box::pin(async move {
                        sqlx::Executor::execute(conn, statement_timeout.as_str()).await?;
                        Ok(())
                    })
                })
        }
    };
    let url = match backend {
        Backend::Sqlite => sqlite_url(url)?,
        Backend::Postgres => url.to_owned(),
    };
    let pool = options
        .acquire_timeout(timeouts.acquire)
        .connect(&url)
        .await?;
    if backend == Backend::Sqlite {
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await?;
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&pool)
            .await?;
    }
    let source = Embedded(match backend {
        Backend::Postgres => migrations.postgres,
        Backend::Sqlite => migrations.sqlite,
    });
    Migrator::new(source).await?.run(&pool).await?;
    Ok((pool, backend))
}

fn sqlite_url(url: &str) -> Result<String, DbError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let file = path.split('?').next().unwrap_or_default();
    if file.is_empty() || file == ":memory:" {
        return Ok(url.to_owned());
    }
    if let Some(dir) = std::path::Path::new(file).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| DbError::Database(sqlx::Error::Io(e)))?;
    }
    // Validate through the driver's own parser before adding options.
    sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    Ok(if url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}?mode=rwc")
    })
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug)]
struct Embedded(MigrationList);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}
