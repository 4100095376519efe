//! Databases for the job store's tests: a fresh PostgreSQL database on the
//! machine's server per call, and a pool for any URL.

use std::sync::Arc;

use common::jobs::{JobStore, SqlJobStore};

pub async fn sql_store(url: &str) -> Arc<dyn JobStore> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(8)
        .connect(url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}",
                test_support::backends::missing("the database", url, &e)
            )
        });
    Arc::new(SqlJobStore::new(pool).await.unwrap())
}

/// A new, empty PostgreSQL database on the machine's server.
pub async fn fresh_postgres_url() -> String {
    use sqlx::Connection;
    let admin = test_support::backends::postgres_url();
    let name = format!("jobs_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}",
                test_support::backends::missing("PostgreSQL", &admin, &e)
            )
        });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}
