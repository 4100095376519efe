//! Test support: a fresh database of each backend per test.
//!
//! PostgreSQL is the machine's server (`TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); each test gets its own
//! database so tests run in parallel without seeing each other. SQLite is a
//! file in a temporary directory. A missing PostgreSQL fails the test: it
//! is never skipped.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use sqlx::Connection;
use users::store::Store;

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A new, empty PostgreSQL database; returns its URL.
pub async fn fresh_postgres_url() -> String {
    sqlx::any::install_default_drivers();
    let admin = postgres_admin_url();
    let name = format!("users_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {admin} must be running for this test (make test starts it): {e}")
        });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("users-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}/users.db", dir.0.display())
}

/// One store per backend, named for assertion messages.
pub async fn stores(dir: &TempDir) -> Vec<(&'static str, Store)> {
    vec![
        ("sqlite", Store::connect(&sqlite_url(dir), 4).await.unwrap()),
        (
            "postgres",
            Store::connect(&fresh_postgres_url().await, 8)
                .await
                .unwrap(),
        ),
    ]
}
