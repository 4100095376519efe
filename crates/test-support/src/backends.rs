//! Where the real servers the integration tests use are.
//!
//! Each is read from one variable with the machine's default; `make test`
//! starts them. A test whose server does not answer fails with the
//! variable and the URL in its message: it never skips.

/// `TEST_REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    var_or("TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

/// `TEST_REDIS_CLUSTER_URL`, default the six-node cluster that
/// `scripts/redis-cluster.sh` starts (`make test` does) on ports 7101–7106:
/// three seeds named, the rest found through them.
pub fn redis_cluster_url() -> String {
    var_or(
        "TEST_REDIS_CLUSTER_URL",
        "redis-cluster://127.0.0.1:7101?node=127.0.0.1:7102&node=127.0.0.1:7103",
    )
}

/// `TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`:
/// an administrative connection that may create databases. (The older
/// name `TEST_POSTGRES_URL` is still read.)
pub fn postgres_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A new, empty PostgreSQL database on [`postgres_url`]'s server, named
/// `<label>_test_<uuid>` (`scripts/drop-test-databases.sh` drops those
/// left by earlier runs); its URL. Each test gets its own, so tests run in
/// parallel without seeing each other's rows.
///
/// # Panics
/// When PostgreSQL does not answer: the test fails, it never skips.
#[cfg(feature = "postgres")]
pub async fn fresh_postgres_url(label: &str) -> String {
    use sqlx::Connection;
    let admin = postgres_url();
    let name = format!("{label}_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("{}", missing("PostgreSQL", &admin, &e)));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    let (base, _) = admin
        .rsplit_once('/')
        .expect("the PostgreSQL URL names a database");
    format!("{base}/{name}")
}

/// `TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    var_or("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

/// A name no other test (or earlier run) uses, for keys, topics, rooms
/// and databases: `<label>-<uuid>`.
pub fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

/// The message a test panics with when its server is missing.
pub fn missing(what: &str, url: &str, error: &dyn std::fmt::Display) -> String {
    format!("{what} at {url} must be running for this test (make test starts it): {error}")
}

fn var_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}
