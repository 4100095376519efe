//! Test support for end-to-end tests: start the real service binaries on
//! random ports and talk to them; or, for tests that need several
//! services but not their processes, start them in this process
//! ([`in_process`]).
//!
//! Binaries are taken from the Cargo target directory this test binary was
//! built into (`make test` builds them first). Each process logs JSON to
//! stdout; the helper reads its "listening" line to learn the ports it
//! bound, so no port is ever guessed.

#![allow(clippy::disallowed_methods)] // a test-only crate: its clients talk to servers the tests start

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use test_support::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long a process gets to start or to stop.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

pub mod in_process;

/// Every service: its binary (named as the service) and environment
/// prefix, from the all-in-one runner's one list.
pub fn services() -> impl Iterator<Item = (&'static str, &'static str)> {
    platform::SERVICES.iter().map(|s| (s.name, s.env_prefix))
}

/// Path of a workspace binary next to this test's target directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which `make test` does)",
        path.display()
    );
    path
}

/// Where one service answers.
#[derive(Clone, Debug)]
pub struct Listening {
    pub http: String,
    pub grpc: Option<String>,
    pub admin: String,
}

/// The service secret every process a test starts shares; a test signs
/// its own gRPC calls with it ([`service_credentials`]).
pub const SERVICE_SECRET: &str = "e2e-service-secret-of-at-least-32-bytes";

/// Credentials signing as `caller` under [`SERVICE_SECRET`].
pub fn service_credentials(caller: &str) -> std::sync::Arc<common::auth::ServiceCredentials> {
    let secret = common::auth::ServiceSecret::new(SERVICE_SECRET.as_bytes())
        .expect("the test secret is long enough");
    std::sync::Arc::new(common::auth::ServiceCredentials::new(
        &secret.key_for(caller),
    ))
}

/// A running service process, killed if the test drops it.
pub struct ServiceProcess {
    child: Child,
    _workdir: TempDir,
    pub listening: HashMap<String, Listening>,
    logs: mpsc::UnboundedReceiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl ServiceProcess {
    /// Starts `binary` with `env` added to a clean environment and waits
    /// until the services named in `expect` log where they listen.
    pub async fn start(binary_name: &str, env: &[(&str, &str)], expect: &[&str]) -> Self {
        let workdir = TempDir::new("e2e");
        let mut child = Command::new(binary(binary_name))
            .current_dir(workdir.path())
            .env_clear()
            .env("PLATFORM_LOG_FORMAT", "json")
            // Processes of one test trust each other, as one deployment's do.
            .env("PLATFORM_SERVICE_SECRET", SERVICE_SECRET)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn service binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, mut logs) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(value);
                }
            }
        });

        let mut listening = HashMap::new();
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + PROCESS_TIMEOUT;
        while expect.iter().any(|s| !listening.contains_key(*s)) {
            let line = tokio::time::timeout_at(deadline, logs.recv())
                .await
                .unwrap_or_else(|_| panic!("{binary_name} did not report listening in time"))
                .unwrap_or_else(|| panic!("{binary_name} exited before listening"));
            if line["message"] == "listening" {
                let service = line["service"].as_str().unwrap_or_default().to_owned();
                let http = format!("http://{}", line["http_addr"].as_str().unwrap_or_default());
                let grpc = line["grpc_addr"].as_str().map(|a| format!("http://{a}"));
                let admin = format!("http://{}", line["admin_addr"].as_str().unwrap_or_default());
                listening.insert(service, Listening { http, grpc, admin });
            }
            seen.push(line);
        }
        Self {
            child,
            _workdir: workdir,
            listening,
            logs,
            seen,
        }
    }

    pub fn http(&self, service: &str) -> &str {
        &self.listening[service].http
    }

    /// The service's admin listener (`/metrics`, `/admin/*`).
    pub fn admin(&self, service: &str) -> &str {
        &self.listening[service].admin
    }

    /// Waits until `count` log lines with this message have been printed
    /// since start, returning them.
    pub async fn wait_for_logs(&mut self, message: &str, count: usize) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + PROCESS_TIMEOUT;
        loop {
            let matching: Vec<_> = self
                .seen
                .iter()
                .filter(|l| l["message"] == message)
                .cloned()
                .collect();
            if matching.len() >= count {
                return matching;
            }
            let line = tokio::time::timeout_at(deadline, self.logs.recv())
                .await
                .unwrap_or_else(|_| panic!("fewer than {count} {message:?} log lines in time"))
                .unwrap_or_else(|| panic!("process exited before logging {message:?}"));
            self.seen.push(line);
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("process still running");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(PROCESS_TIMEOUT, self.child.wait())
            .await
            .expect("process exits after SIGTERM")
            .expect("wait for process")
    }
}

/// Runs a binary that is expected to fail at start-up; returns its exit
/// status and what it printed on stderr.
pub async fn run_to_failure(binary_name: &str, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let workdir = TempDir::new("e2e");
    let mut child = Command::new(binary(binary_name))
        .current_dir(workdir.path())
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn service binary");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    let status = tokio::time::timeout(PROCESS_TIMEOUT, child.wait())
        .await
        .expect("a failing start exits promptly")
        .expect("wait for process");
    (status, stderr)
}

/// Environment putting every listener of the service with this prefix on
/// a random loopback port.
pub fn random_ports(prefix: &str) -> Vec<(String, String)> {
    ["HTTP_ADDR", "GRPC_ADDR", "ADMIN_ADDR"]
        .iter()
        .map(|key| (format!("{prefix}_{key}"), "127.0.0.1:0".to_owned()))
        .collect()
}

/// Polls `url` until it answers 200 (a service may report listening a
/// moment before its first readiness check passes).
pub async fn wait_until_ok(client: &reqwest::Client, url: &str) -> reqwest::Response {
    test_support::eventually_some(PROCESS_TIMEOUT, &format!("{url} to answer 200"), || async {
        client
            .get(url)
            .send()
            .await
            .ok()
            .filter(|res| res.status().is_success())
    })
    .await
}
