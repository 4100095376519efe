//! Load generator for the notifications benchmark
//! (bench/notifications-vs-sse.sh), against the notifications service (fed
//! through Kafka) or the Node `http` broadcaster (bench/sse-node/server.js,
//! fed by `POST /publish`).
//!
//! `sse-fanout idle <base> <streams> <users> <server-pid> [key brokers]`: opens the
//! streams (user `i % users + 1` each), waits for each one's first byte,
//! then prints the server's RSS growth per stream.
//!
//! `sse-fanout fanout <base> <streams> <users> <rounds> [key brokers]`:
//! opens the streams; each round is one notification to every user, so
//! every stream gets one. Prints deliveries per second from the first
//! notification sent to the last delivered, and the send-to-receive
//! latency percentiles.
//!
//! `sse-fanout latency <base> <users> <rate> <seconds> [key brokers]`: one
//! stream per user, notifications sent at `rate` per second round-robin;
//! prints the send-to-receive percentiles.
//!
//! With `key` and `brokers` the target is the notifications service: each
//! stream carries an access token signed with the key, and each
//! notification is a `UserCreated` event produced to `users.events` (the
//! service makes its welcome notification). Each notification carries its
//! send time (µs since the epoch) in the user name, read back from the
//! delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Notify};

use common::config::Env;
use common::events::{CloudEvent, EventBus, EventBusConfig};

use platform_bench::{Error, access_token, rss_kib};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0))
}

/// Where notifications go: the service through Kafka, or Node over HTTP.
enum Target {
    Service { key: String, bus: Arc<dyn EventBus> },
    Node { base: String },
}

impl Target {
    fn new(base: &str, key: Option<&String>, brokers: Option<&String>) -> Result<Self, Error> {
        Ok(match (key, brokers) {
            (Some(key), Some(brokers)) => {
                let env = Env::from_map("BENCH", [("BENCH_KAFKA_BROKERS", brokers.as_str())]);
                Self::Service {
                    key: key.clone(),
                    bus: EventBusConfig::from_env(&env)?.connect()?,
                }
            }
            _ => Self::Node {
                base: base.to_owned(),
            },
        })
    }

    fn stream_request(&self, base: &str, user: u64) -> Result<String, Error> {
        let host = base.trim_start_matches("http://");
        Ok(match self {
            Self::Service { key, .. } => format!(
                "GET /api/v1/notifications/stream HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {}\r\naccept: text/event-stream\r\n\r\n",
                access_token(key, user)?
            ),
            Self::Node { .. } => format!(
                "GET /stream?user={user} HTTP/1.1\r\nhost: {host}\r\naccept: text/event-stream\r\n\r\n"
            ),
        })
    }
}

/// Sends notifications to the Node server over one keep-alive connection.
struct NodePublisher {
    conn: Mutex<TcpStream>,
    host: String,
}

impl NodePublisher {
    async fn connect(base: &str) -> Result<Self, Error> {
        let host = base.trim_start_matches("http://").to_owned();
        let conn = TcpStream::connect(&host).await?;
        conn.set_nodelay(true)?;
        Ok(Self {
            conn: Mutex::new(conn),
            host,
        })
    }

    async fn publish(&self, user: u64, body: &str) -> Result<(), Error> {
        let request = format!(
            "POST /publish?user={user} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        let mut conn = self.conn.lock().await;
        conn.write_all(request.as_bytes()).await?;
        // `204` with no body: read the head.
        let mut head = Vec::with_capacity(128);
        let mut byte = [0u8; 256];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut byte).await?;
            if n == 0 {
                return Err("the Node server closed the publisher".into());
            }
            head.extend_from_slice(&byte[..n]);
        }
        Ok(())
    }
}

async fn send(
    target: &Target,
    node: Option<&NodePublisher>,
    user: u64,
    n: u64,
) -> Result<(), Error> {
    let stamp = format!("t{}", now_us());
    match target {
        Target::Service { bus, .. } => {
            let event = CloudEvent {
                id: format!("bench-{user}-{n}-{stamp}"),
                source: "/users".into(),
                event_type: "UserCreated".into(),
                subject: user.to_string(),
                time: humantime_now(),
                aggregate_version: 1,
                schema_version: 1,
                traceparent: None,
                data: serde_json::json!({
                    "id": user, "username": stamp, "email": "bench@example.com"
                })
                .to_string()
                .into_bytes(),
            };
            bus.publish("users.events", &event).await?;
        }
        Target::Node { .. } => {
            let body = serde_json::json!({
                "id": n, "type": "info", "title": "Welcome",
                "message": format!("Welcome, {stamp}! Your account is ready."), "user_id": user
            })
            .to_string();
            node.ok_or("no publisher")?.publish(user, &body).await?;
        }
    }
    Ok(())
}

fn humantime_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What every stream has received, and the latencies measured.
#[derive(Default)]
struct Tally {
    deliveries: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<u64>>,
    arrived: Notify,
}

/// Opens one stream and reads it until the connection ends, counting
/// notification events; returns once the head and first byte arrived.
async fn open(addr: &str, request: String, tally: Arc<Tally>) -> Result<(), Error> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await?;
    if n == 0 || !buf.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "the stream was refused: {}",
            String::from_utf8_lossy(&buf[..n.min(200)])
        )
        .into());
    }
    let first = buf[..n].to_vec();
    tokio::spawn(async move {
        let mut pending = first;
        loop {
            // Whole blocks only: an event split across reads waits.
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let block = &pending[..end];
                if block.windows(19).any(|w| w == b"event: notification") {
                    if let Some(at) = block.windows(10).position(|w| w == b"Welcome, t") {
                        let digits: Vec<u8> = block[at + 10..]
                            .iter()
                            .take_while(|b| b.is_ascii_digit())
                            .copied()
                            .collect();
                        if let Ok(sent) = std::str::from_utf8(&digits).unwrap_or("").parse::<u64>()
                        {
                            let took = now_us().saturating_sub(sent);
                            if let Ok(mut l) = tally.latencies_us.lock() {
                                l.push(took);
                            }
                        }
                    }
                    tally.deliveries.fetch_add(1, Ordering::Relaxed);
                    tally.arrived.notify_waiters();
                }
                pending.drain(..end + 2);
            }
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
    });
    Ok(())
}

async fn open_all(
    base: &str,
    target: &Target,
    streams: u64,
    users: u64,
    tally: &Arc<Tally>,
) -> Result<(), Error> {
    let addr = base.trim_start_matches("http://").to_owned();
    // A few hundred at once: a burst of 10 000 connects overflows the
    // listen backlog.
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..streams {
        let request = target.stream_request(base, i % users + 1)?;
        let (addr, tally) = (addr.clone(), tally.clone());
        opening.spawn(async move { open(&addr, request, tally).await });
        if opening.len() >= 200
            && let Some(done) = opening.join_next().await
        {
            done??;
        }
    }
    while let Some(done) = opening.join_next().await {
        done??;
    }
    Ok(())
}

fn percentiles(mut latencies: Vec<u64>) -> String {
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map_or(0.0, |us| *us as f64 / 1000.0)
    };
    format!(
        "p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    )
}

async fn wait_for(tally: &Tally, count: u64, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    while tally.deliveries.load(Ordering::Relaxed) < count {
        let arrived = tally.arrived.notified();
        if tokio::time::timeout_at(deadline.into(), arrived)
            .await
            .is_err()
        {
            return Err(format!(
                "{} of {count} deliveries arrived in {limit:?}",
                tally.deliveries.load(Ordering::Relaxed)
            )
            .into());
        }
    }
    Ok(())
}

async fn run(args: &[String]) -> Result<(), Error> {
    let arg = |i: usize| {
        args.get(i)
            .ok_or_else(|| Error::from(format!("argument {i} missing")))
    };
    let num = |i: usize| -> Result<u64, Error> { Ok(arg(i)?.parse()?) };
    match arg(1)?.as_str() {
        "idle" => {
            let (base, streams, users) = (arg(2)?.clone(), num(3)?, num(4)?);
            let pid = u32::try_from(num(5)?)?;
            let target = Target::new(&base, args.get(6), args.get(7))?;
            let tally = Arc::new(Tally::default());
            open_all(&base, &target, 1, users, &tally).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let before = rss_kib(pid)?;
            open_all(&base, &target, streams, users, &tally).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = rss_kib(pid)?;
            let per = after.saturating_sub(before) as f64 / streams as f64;
            println!(
                "streams={streams} rss_before_kib={before} rss_after_kib={after} kib_per_stream={per:.2}"
            );
        }
        "fanout" => {
            let (base, streams, users, rounds) = (arg(2)?.clone(), num(3)?, num(4)?, num(5)?);
            let target = Target::new(&base, args.get(6), args.get(7))?;
            let node = match &target {
                Target::Node { base } => Some(NodePublisher::connect(base).await?),
                Target::Service { .. } => None,
            };
            let tally = Arc::new(Tally::default());
            open_all(&base, &target, streams, users, &tally).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let started = Instant::now();
            for round in 0..rounds {
                for user in 1..=users {
                    send(&target, node.as_ref(), user, round).await?;
                }
            }
            wait_for(&tally, streams * rounds, Duration::from_secs(120)).await?;
            let elapsed = started.elapsed();
            let delivered = tally.deliveries.load(Ordering::Relaxed);
            let latencies = tally
                .latencies_us
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default();
            println!(
                "deliveries={delivered} seconds={:.3} deliveries_per_s={:.0} {}",
                elapsed.as_secs_f64(),
                delivered as f64 / elapsed.as_secs_f64(),
                percentiles(latencies)
            );
        }
        "latency" => {
            let (base, users, rate, seconds) = (arg(2)?.clone(), num(3)?, num(4)?, num(5)?);
            let target = Target::new(&base, args.get(6), args.get(7))?;
            let node = match &target {
                Target::Node { base } => Some(NodePublisher::connect(base).await?),
                Target::Service { .. } => None,
            };
            let tally = Arc::new(Tally::default());
            open_all(&base, &target, users, users, &tally).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let total = rate * seconds;
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for n in 0..total {
                tick.tick().await;
                send(&target, node.as_ref(), n % users + 1, n).await?;
            }
            wait_for(&tally, total, Duration::from_secs(60)).await?;
            let latencies = tally
                .latencies_us
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default();
            println!("events={total} rate={rate}/s {}", percentiles(latencies));
        }
        other => return Err(format!("unknown mode {other}").into()),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
