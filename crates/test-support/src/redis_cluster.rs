//! A six-node Redis Cluster of the test's own (three masters, three
//! replicas, `scripts/redis-cluster.sh` on free ports), for tests that
//! pause a master to see a failover, while the shared cluster other tests
//! use stays as it is.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::TempDir;

pub struct PrivateRedisCluster {
    first: u16,
    dir: TempDir,
    /// Every node's process, so a paused one can be woken and all of them
    /// ended however the test ends.
    pids: Vec<String>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/redis-cluster.sh")
}

/// Six consecutive free ports, and their cluster-bus ports (+10000).
fn free_block() -> u16 {
    for _ in 0..200 {
        let first = 20_000 + fastrand_port();
        let free = (first..first + 6)
            .flat_map(|p| [p, p + 10_000])
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return first;
        }
    }
    panic!("no block of six free ports for a private Redis Cluster");
}

fn fastrand_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u16::try_from((nanos ^ std::process::id()) % 9_000).unwrap_or(0)
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli must be installed (make test does): {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl PrivateRedisCluster {
    /// # Panics
    /// When redis-server is missing or the cluster does not form.
    pub fn start() -> Self {
        let mut cluster = Self {
            first: free_block(),
            dir: TempDir::new("private-redis-cluster"),
            pids: Vec::new(),
        };
        let status = Command::new("bash")
            .arg(script())
            .arg("start")
            .env("REDIS_CLUSTER_PORT", cluster.first.to_string())
            .env("REDIS_CLUSTER_DIR", cluster.dir.path())
            .status()
            .expect("bash runs scripts/redis-cluster.sh");
        assert!(status.success(), "the private Redis Cluster did not form");
        cluster.pids = cluster.ports().map(Self::pid).collect();
        cluster
    }

    /// `redis-cluster://` with three seeds.
    pub fn url(&self) -> String {
        let p = self.first;
        format!(
            "redis-cluster://127.0.0.1:{p}?node=127.0.0.1:{}&node=127.0.0.1:{}",
            p + 1,
            p + 2
        )
    }

    fn ports(&self) -> impl Iterator<Item = u16> {
        self.first..self.first + 6
    }

    /// The port of the master that serves `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = cli(self.first, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("a slot number");
        for port in self.ports() {
            let role = cli(port, &["role"]);
            if !role.starts_with("master") {
                continue;
            }
            let nodes = cli(port, &["cluster", "nodes"]);
            for line in nodes.lines().filter(|l| l.contains("myself")) {
                for range in line.split_whitespace().skip(8) {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    if let (Ok(from), Ok(to)) = (from.parse::<u16>(), to.parse::<u16>())
                        && (from..=to).contains(&slot)
                    {
                        return port;
                    }
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    fn pid(port: u16) -> String {
        cli(port, &["info", "server"])
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .map(|p| p.trim().to_owned())
            .expect("the node's process id")
    }

    /// Waits until the master on `port` has a replica online that has
    /// everything it wrote (replication is asynchronous: a failover right
    /// after a write may lose it, which a test may not want to depend on).
    pub fn wait_replicated(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = cli(port, &["info", "replication"]);
            let written = info
                .lines()
                .find_map(|l| l.strip_prefix("master_repl_offset:"))
                .and_then(|o| o.trim().parse::<u64>().ok());
            let caught_up = info.lines().filter(|l| l.starts_with("slave")).any(|l| {
                l.contains("state=online")
                    && l.split(',')
                        .find_map(|f| f.strip_prefix("offset="))
                        .and_then(|o| o.trim().parse::<u64>().ok())
                        == written
            });
            if caught_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica of {port} never caught up: {info}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the node on `port` (SIGSTOP) and waits until the cluster has
    /// promoted its replica.
    pub fn pause_until_failover(&self, port: u16) -> Paused {
        let pid = Self::pid(port);
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .expect("kill runs");
        let other = self.ports().find(|p| *p != port).unwrap_or(self.first);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let nodes = cli(other, &["cluster", "nodes"]);
            // Marked failed for good (`fail`, not the suspicion `fail?`).
            let failed = nodes.lines().any(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields
                    .get(1)
                    .is_some_and(|a| a.contains(&format!(":{port}@")))
                    && fields
                        .get(2)
                        .is_some_and(|f| f.split(',').any(|f| f == "fail"))
            });
            let healthy = cli(other, &["cluster", "info"]).contains("cluster_state:ok");
            if failed && healthy {
                return Paused { pid };
            }
            assert!(
                Instant::now() < deadline,
                "no failover of the paused master"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A paused node, resumed (SIGCONT) when dropped.
pub struct Paused {
    pid: String,
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.pid]).status();
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        for signal in ["-CONT", "-KILL"] {
            let _ = Command::new("kill").arg(signal).args(&self.pids).status();
        }
    }
}
