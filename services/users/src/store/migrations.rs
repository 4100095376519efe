//! Migrations compiled into the binary, one set per backend.

use std::borrow::Cow;

use std::future::Future;
use std::pin::Pin;

use sqlx::AnyPool;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::Backend;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "event store",
        include_str!("../../migrations/postgres/0001_event_store.sql"),
    ),
    (
        2,
        "relay lease",
        include_str!("../../migrations/postgres/0002_relay_lease.sql"),
    ),
    (
        3,
        "outbox parking",
        include_str!("../../migrations/postgres/0003_outbox_parking.sql"),
    ),
    (
        4,
        "idempotency keys",
        include_str!("../../migrations/postgres/0004_idempotency_keys.sql"),
    ),
];

const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "event store",
        include_str!("../../migrations/sqlite/0001_event_store.sql"),
    ),
    (
        2,
        "relay lease",
        include_str!("../../migrations/sqlite/0002_relay_lease.sql"),
    ),
    (
        3,
        "outbox parking",
        include_str!("../../migrations/sqlite/0003_outbox_parking.sql"),
    ),
    (
        4,
        "idempotency keys",
        include_str!("../../migrations/sqlite/0004_idempotency_keys.sql"),
    ),
];

#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

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

pub(super) async fn run(
    pool: &AnyPool,
    backend: Backend,
) -> Result<(), sqlx::migrate::MigrateError> {
    let source = match backend {
        Backend::Postgres => Embedded(POSTGRES),
        Backend::Sqlite => Embedded(SQLITE),
    };
    Migrator::new(source).await?.run(pool).await
}
