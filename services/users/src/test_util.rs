//! Typed helpers for tests that run this service (feature `test-util`).

use common::auth::{ServiceAuthConfig, ServiceInterceptor};
use common::config::{Env, ServiceConfig};
use common::service::Shared;
use platform_proto::posts::v1::comment_service_client::CommentServiceClient;
use platform_proto::posts::v1::post_service_client::PostServiceClient;
use platform_proto::users::v1::user_service_client::UserServiceClient;
use test_support::{TempDir, TestHost, backends};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Config;

/// What a test may choose about the service; everything else is the
/// embedded default.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A SQLite file in the app's own directory when unset.
    pub database_url: Option<String>,
    /// The shared cache level; L1 + disk only when unset.
    pub redis_url: Option<String>,
    /// Replicas that must share cache entries share a namespace; a unique
    /// one by default, so entries left by earlier runs never answer.
    pub cache_namespace: Option<String>,
    /// The password-hashing bulkhead; the service's default when unset.
    pub hashing: Option<crate::password::HashLimits>,
}

/// The users service on random loopback ports, with a gRPC channel to it.
pub struct TestApp {
    pub host: TestHost,
    channel: Channel,
    _dir: TempDir,
}

/// A channel whose calls carry a service token.
pub type Signed = InterceptedService<Channel, ServiceInterceptor>;

impl TestApp {
    /// Calls signed as the gateway, the service's usual caller.
    pub fn users(&self) -> UserServiceClient<Signed> {
        self.users_as("gateway")
    }

    /// Calls signed as `caller` (`admin`, `search`, ...), with the secret
    /// every service of this process shares.
    pub fn users_as(&self, caller: &str) -> UserServiceClient<Signed> {
        UserServiceClient::new(self.signed(caller))
    }

    pub fn posts(&self) -> PostServiceClient<Signed> {
        PostServiceClient::new(self.signed("gateway"))
    }

    pub fn comments(&self) -> CommentServiceClient<Signed> {
        CommentServiceClient::new(self.signed("gateway"))
    }

    /// The channel signed as `caller`.
    pub fn signed(&self, caller: &str) -> Signed {
        let credentials = ServiceAuthConfig::process_default(caller).credentials();
        InterceptedService::new(
            self.channel.clone(),
            credentials.interceptor(crate::config::DEFAULTS.name),
        )
    }

    /// The bare channel: calls without a service token.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Stops the service, asserting a clean exit.
    pub async fn stop(self) {
        self.host.stop().await;
    }
}

/// Starts the service and connects to it.
pub async fn spawn_app(options: Options, shared: &Shared) -> TestApp {
    let dir = TempDir::new("users-test");
    let database_url = options
        .database_url
        .unwrap_or_else(|| dir.sqlite_url("users.db"));
    let mut config = Config::from_source(&Env::from_map(
        crate::config::ENV_PREFIX,
        [("USERS_DATABASE_URL", database_url)],
    ))
    .expect("the test configuration is valid");
    config.service = ServiceConfig::ephemeral(crate::config::DEFAULTS.name, true);
    config.redis_url = options.redis_url.map(common::config::SecretUrl::new);
    config.cache.disk_dir = Some(dir.join("cache"));
    if let Some(hashing) = options.hashing {
        config.hashing = hashing;
    }
    config.cache.namespace = options
        .cache_namespace
        .unwrap_or_else(|| backends::unique("users-test"));
    let builder = crate::build(config, shared)
        .await
        .unwrap_or_else(|e| panic!("users must start: {}", common::exit::chain(&e)));
    let host = TestHost::spawn(builder);
    let timeouts = common::clients::Timeouts {
        connect: std::time::Duration::from_secs(5),
        request: std::time::Duration::from_secs(30),
    };
    let channel = common::clients::grpc_endpoint(host.grpc_url(), timeouts)
        .expect("a valid URL")
        .connect()
        .await
        .expect("the users gRPC port accepts connections");
    TestApp {
        host,
        channel,
        _dir: dir,
    }
}

/// A new, empty PostgreSQL database on the machine's server
/// ([`backends::postgres_url`]); returns its URL.
pub async fn fresh_postgres_url() -> String {
    sqlx::any::install_default_drivers();
    backends::fresh_postgres_url("users").await
}

/// One store per backend, named for assertion messages: a SQLite file in
/// `dir` and a fresh PostgreSQL database.
pub async fn stores(dir: &TempDir) -> Vec<(&'static str, crate::store::Store)> {
    use crate::store::Store;
    let sqlite = Store::connect(&dir.sqlite_url("users.db"), 4)
        .await
        .expect("SQLite opens");
    let postgres = Store::connect(&fresh_postgres_url().await, 8)
        .await
        .expect("PostgreSQL opens");
    vec![("sqlite", sqlite), ("postgres", postgres)]
}

/// Runs `SELECT pg_sleep(seconds)` on `store`'s PostgreSQL: how a test
/// sees the statement timeout at work.
pub async fn sleep_in_database(
    store: &crate::store::Store,
    seconds: f64,
) -> Result<(), crate::store::StoreError> {
    sqlx::query(&format!("SELECT CAST(pg_sleep({seconds}) AS TEXT)"))
        .execute(store.pool())
        .await?;
    Ok(())
}
