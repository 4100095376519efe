//! A Kafka-protocol broker for tests and local runs where several processes
//! must share one Kafka: librdkafka's mock cluster (produce, idempotent
//! producers, consumer groups with committed offsets, topic
//! auto-creation), served on loopback.
//!
//! `kafka-mock-cluster [brokers]` prints its bootstrap address on the first
//! line of stdout and serves until SIGTERM or SIGINT.

use std::io::Write;
use std::process::ExitCode;

use rdkafka::mocking::MockCluster;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let brokers = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let cluster = match MockCluster::new(brokers) {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("error: cannot start the mock Kafka cluster: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "{}", cluster.bootstrap_servers())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            eprintln!("error: cannot listen for SIGTERM: {error}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(cluster);
    ExitCode::SUCCESS
}
