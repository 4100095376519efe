//! No-op jobs through RabbitMQ, end to end, against the floor: lapin
//! publishing with confirms and consuming with acks and nothing else, on
//! the same kind of queue (durable quorum queue, persistent messages).
//!
//! `jobs-rate <floor|memory|postgres> peak <jobs> <publishers> <concurrency>`
//!   prints `jobs=<n> seconds=<s> rate=<jobs/s>`: enqueues from
//!   `publishers` tasks, each waiting for its confirm, while workers run
//!   `concurrency` jobs at once; timed from the first enqueue to the last
//!   handler.
//! `jobs-rate <mode> latency <jobs/s> <seconds> <concurrency>`
//!   prints `sent=<n> p50=<ms> p99=<ms> max=<ms>`: an open-loop load at a
//!   fixed rate, latency from each enqueue's slot to its handler's start.
//!
//! `memory` keeps jobs' records in the process, `postgres` in
//! `BENCH_DATABASE_URL` (a fresh table each run); the broker is
//! `BENCH_AMQP_URL` (default the machine's RabbitMQ).

#![allow(clippy::disallowed_methods)] // a benchmark builds its own clients

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::jobs::{
    JobQueue, JobRecord, JobStore, JobsConfig, MemoryJobStore, NewJob, RabbitMqConfig,
    RabbitMqQueue, SqlJobStore, Workers, handler_fn,
};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What a run measures: every handled job's enqueue-to-start latency.
#[derive(Default)]
struct Tally {
    done: AtomicUsize,
    latencies_us: Mutex<Vec<u64>>,
    all_done: Notify,
}

impl Tally {
    async fn handled(&self, enqueued_us: u64, expected: usize) {
        let waited = micros_now().saturating_sub(enqueued_us);
        self.latencies_us.lock().await.push(waited);
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == expected {
            self.all_done.notify_one();
        }
    }
}

/// Enqueues one job carrying its slot time.
#[async_trait::async_trait]
trait Enqueue: Send + Sync {
    async fn enqueue(&self, slot_us: u64) -> Result<(), Error>;
}

struct Ours(JobQueue);

#[async_trait::async_trait]
impl Enqueue for Ours {
    async fn enqueue(&self, slot_us: u64) -> Result<(), Error> {
        self.0
            .enqueue(NewJob::new("bench.noop", serde_json::json!(slot_us)))
            .await?;
        Ok(())
    }
}

struct Floor {
    channel: lapin::Channel,
    queue: String,
}

#[async_trait::async_trait]
impl Enqueue for Floor {
    async fn enqueue(&self, slot_us: u64) -> Result<(), Error> {
        self.channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions::default(),
                slot_us.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        Ok(())
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// Starts the consumers of `mode` and returns its enqueuer.
async fn setup(
    mode: &str,
    concurrency: usize,
    expected: usize,
    tally: Arc<Tally>,
) -> Result<(Arc<dyn Enqueue>, Box<dyn std::any::Any + Send>), Error> {
    let url = std::env::var("BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let prefix = format!("bench-{}", std::process::id());
    if mode == "floor" {
        let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let queue = format!("{prefix}.floor");
        publisher
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                quorum(),
            )
            .await?;
        let consumer_channel = connection.create_channel().await?;
        consumer_channel
            .basic_qos(
                u16::try_from(concurrency).unwrap_or(u16::MAX),
                BasicQosOptions::default(),
            )
            .await?;
        let mut consumer = consumer_channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let slot: u64 = std::str::from_utf8(&delivery.data)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                tally.handled(slot, expected).await;
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
        });
        let keep = Box::new((connection, consumer_channel));
        return Ok((
            Arc::new(Floor {
                channel: publisher,
                queue,
            }),
            keep,
        ));
    }
    let store: Arc<dyn JobStore> = match mode {
        "memory" => Arc::new(MemoryJobStore::with_capacity(10_000_000)),
        "postgres" => {
            sqlx::any::install_default_drivers();
            let url = std::env::var("BENCH_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let pool = sqlx::any::AnyPoolOptions::new()
                .max_connections(16)
                .connect(&url)
                .await?;
            sqlx::query("DROP TABLE IF EXISTS jobs")
                .execute(&pool)
                .await?;
            Arc::new(SqlJobStore::new(pool).await?)
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    let mut config = RabbitMqConfig::new(url);
    config.prefix = prefix;
    let rabbit = RabbitMqQueue::new(config);
    rabbit.connect().await?;
    let queue = JobQueue::new(store, Arc::new(rabbit), JobsConfig::default());
    let handler = handler_fn(move |job: JobRecord| {
        let tally = tally.clone();
        Box::pin(async move {
            let slot = job.payload.as_u64().unwrap_or(0);
            tally.handled(slot, expected).await;
            Ok(())
        })
    });
    let pool = queue.start(Workers::new().register("bench.noop", handler, concurrency));
    Ok((Arc::new(Ours(queue)), Box::new(pool)))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn peak(mode: &str, jobs: usize, publishers: usize, concurrency: usize) -> Result<(), Error> {
    let tally = Arc::new(Tally::default());
    let (enqueue, _keep) = setup(mode, concurrency, jobs, tally.clone()).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let enqueue = enqueue.clone();
        let share = jobs / publishers + usize::from(p < jobs % publishers);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                enqueue.enqueue(micros_now()).await?;
            }
            Ok::<(), Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    if tally.done.load(Ordering::SeqCst) < jobs {
        tokio::time::timeout(Duration::from_secs(120), tally.all_done.notified()).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "mode={mode} jobs={jobs} seconds={seconds:.2} rate={:.0}",
        jobs as f64 / seconds
    );
    Ok(())
}

async fn latency(mode: &str, rate: f64, seconds: u64, concurrency: usize) -> Result<(), Error> {
    let total = (rate * seconds as f64) as usize;
    let tally = Arc::new(Tally::default());
    let (enqueue, _keep) = setup(mode, concurrency, total, tally.clone()).await?;
    let start = Instant::now() + Duration::from_millis(200);
    let start_us = micros_now() + 200_000;
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = start + every.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        let slot_us = start_us + every.mul_f64(n as f64).as_micros() as u64;
        let enqueue = enqueue.clone();
        sends.spawn(async move { enqueue.enqueue(slot_us).await });
        while sends.try_join_next().is_some() {}
    }
    while let Some(result) = sends.join_next().await {
        result??;
    }
    if tally.done.load(Ordering::SeqCst) < total {
        tokio::time::timeout(Duration::from_secs(120), tally.all_done.notified()).await?;
    }
    let mut latencies = tally.latencies_us.lock().await.clone();
    latencies.sort_unstable();
    println!(
        "mode={mode} sent={total} p50={:.1} p99={:.1} max={:.1}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    Ok(())
}

/// Deletes this run's queues (named by the process id).
async fn cleanup(mode: &str) {
    let url = std::env::var("BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    let prefix = format!("bench-{}", std::process::id());
    let names = if mode == "floor" {
        vec![format!("{prefix}.floor")]
    } else {
        vec![
            format!("{prefix}.q.bench.noop"),
            format!("{prefix}.dlq.bench.noop"),
        ]
    };
    for name in names {
        let _ = channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: jobs-rate <floor|memory|postgres> peak <jobs> <publishers> <concurrency>\n       jobs-rate <floor|memory|postgres> latency <jobs/s> <seconds> <concurrency>";
    let [mode, what, a, b, c] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            let result = match what.as_str() {
                "peak" => peak(mode, a.parse()?, b.parse()?, c.parse()?).await,
                "latency" => latency(mode, a.parse()?, b.parse()?, c.parse()?).await,
                _ => Err(usage.into()),
            };
            cleanup(mode).await;
            result
        })
}
