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
    test_support::backends::fresh_postgres_url("jobs").await
}
