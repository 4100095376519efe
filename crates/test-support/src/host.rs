use std::net::SocketAddr;

use common::server::{ServerError, ServiceHost, ServiceHostBuilder};
use common::shutdown::CancellationToken;
use tokio::task::JoinHandle;

/// A service serving on the ports it bound, until [`TestHost::stop`].
///
/// Dropping it without `stop` still shuts the service down (the test
/// failed already, or does not care how it ends).
pub struct TestHost {
    name: &'static str,
    http: SocketAddr,
    grpc: Option<SocketAddr>,
    admin: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestHost {
    /// Binds `builder`'s listeners (give it `ServiceConfig::ephemeral` for
    /// random loopback ports) and serves in the background.
    pub fn spawn(builder: ServiceHostBuilder) -> Self {
        let host = builder
            .build()
            .unwrap_or_else(|e| panic!("the service host must bind: {}", common::exit::chain(&e)));
        Self::serve(host)
    }

    /// Serves an already bound host.
    pub fn serve(host: ServiceHost) -> Self {
        let stop = CancellationToken::new();
        let name = host.name();
        let http = host.http_addr();
        let grpc = host.grpc_addr();
        let admin = host.admin_addr();
        let task = tokio::spawn(host.run_until_stopped(stop.clone().cancelled_owned()));
        Self {
            name,
            http,
            grpc,
            admin,
            stop,
            task: Some(task),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `http://127.0.0.1:<port>` of the admin listener (`/metrics`,
    /// `/admin/*`).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// `http://127.0.0.1:<port>` of the gRPC listener.
    ///
    /// # Panics
    /// When the service serves no gRPC.
    pub fn grpc_url(&self) -> String {
        let addr = self
            .grpc
            .unwrap_or_else(|| panic!("{} has no gRPC listener", self.name));
        format!("http://{addr}")
    }

    /// Shuts the service down and asserts that it drained and stopped
    /// without an error.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let task = self.task.take().expect("stopped once");
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!(
                "{} did not stop cleanly: {}",
                self.name,
                common::exit::chain(&error)
            ),
            Err(panic) => panic!("{} panicked: {panic}", self.name),
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
