//! A private `redis-server` a test starts, kills and starts again, to see
//! what the platform does while its Redis is gone. Its data survives a
//! restart (append-only file in the test's directory), as a production
//! Redis's would, so whatever was cached before the outage is still there
//! after it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::TempDir;

pub struct PrivateRedis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// # Panics
    /// When `redis-server` is not installed (`make test` installs it) or
    /// does not start: the test fails, it never skips.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut redis = Self {
            port,
            dir: TempDir::new("private-redis"),
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The keys matching `pattern`, read with `redis-cli` (installed with
    /// the server), so a test sees what the platform stored in Redis.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw", "KEYS", pattern])
            .output()
            .unwrap_or_else(|e| panic!("redis-cli must be installed (make test does): {e}"));
        assert!(out.status.success(), "redis-cli KEYS failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server must be installed (make test does): {e}"));
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the private redis-server did not listen on port {}",
            self.port
        );
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
