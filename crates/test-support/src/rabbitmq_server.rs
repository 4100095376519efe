//! A RabbitMQ node of the test's own, to stop and start again while the
//! machine's broker (which other tests share) stays up. It has its own
//! node name, AMQP and distribution ports, data and log directories (owned
//! by the `rabbitmq` user, as the server requires), and keeps its data
//! across a restart, as a production broker does.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;

pub struct PrivateRabbit {
    port: u16,
    dist_port: u16,
    node: String,
    dir: TempDir,
    running: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PrivateRabbit {
    /// Starts the node and waits (up to a minute) until it takes AMQP
    /// connections.
    ///
    /// # Panics
    /// When RabbitMQ is not installed or the node does not start: the
    /// test fails, it never skips.
    pub fn start() -> Self {
        let port = free_port();
        let dir = TempDir::new("private-rabbitmq");
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("the node's directories");
        }
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .expect("the node's config");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("the node's plugins file");
        let owned = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            owned,
            "cannot give {} to the rabbitmq user",
            dir.path().display()
        );
        let mut node = Self {
            port,
            dist_port: free_port(),
            node: format!("test-{port}@localhost"),
            dir,
            running: false,
        };
        node.restart();
        node
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn as_rabbitmq(&self, program: &str) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "rabbitmq", "--", "env", "HOME=/var/lib/rabbitmq"])
            .arg(format!("RABBITMQ_NODENAME={}", self.node))
            .arg(format!(
                "RABBITMQ_CONFIG_FILE={}",
                self.dir.join("rabbitmq.conf").display()
            ))
            .arg(format!("RABBITMQ_DIST_PORT={}", self.dist_port))
            .arg(format!(
                "RABBITMQ_MNESIA_BASE={}",
                self.dir.join("mnesia").display()
            ))
            .arg(format!(
                "RABBITMQ_LOG_BASE={}",
                self.dir.join("log").display()
            ))
            .arg(format!(
                "RABBITMQ_ENABLED_PLUGINS_FILE={}",
                self.dir.join("enabled_plugins").display()
            ))
            .arg(program)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Stops the node (its data stays for [`PrivateRabbit::restart`]);
    /// returns once it no longer listens.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let _ = self
            .as_rabbitmq("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.running = false;
    }

    /// Starts the node again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let started = self
            .as_rabbitmq("rabbitmq-server")
            .arg("-detached")
            .status()
            .unwrap_or_else(|e| {
                panic!("rabbitmq-server must be installed (make test checks): {e}")
            });
        assert!(started.success(), "rabbitmq-server -detached failed");
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the private RabbitMQ node {} did not listen on port {} (logs in {})",
            self.node,
            self.port,
            self.dir.join("log").display()
        );
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.stop();
    }
}
