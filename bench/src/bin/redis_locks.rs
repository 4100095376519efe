//! Lock acquire + release per second against the floor, and cache L2 reads
//! per second, on a single Redis or a Redis Cluster (the URL decides).
//!
//! `redis-locks floor <url> <ops> <workers>`: `SET key token NX PX` then
//!   `DEL key` through fred, in a plain loop per worker;
//! `redis-locks locks <url> <ops> <workers>`: `Locks::try_acquire` then
//!   `release` (the script, the fencing token, the guard);
//! `redis-locks l2 <url> <ops> <workers>`: reads of the cache's Redis
//!   level (`RedisLevel::get`, 1,000 keys), each one GET on Redis.
//! Each prints `mode=<m> ops=<n> seconds=<s> rate=<ops/s>`.

#![allow(clippy::disallowed_methods)] // a benchmark builds its own clients

use std::sync::Arc;
use std::time::Duration;

use common::cache::RedisLevel;
use common::lock::{Locks, RedisLocks};
use fred::prelude::*;
use tokio::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn run(mode: String, url: String, ops: usize, workers: usize) -> Result<(), Error> {
    let options = common::redis::RedisOptions {
        command_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let (client, _) = common::redis::connect(&url, &options).await?;
    let run_id = std::process::id();
    let per_worker = ops / workers;
    let started;
    let mut tasks = tokio::task::JoinSet::new();
    match mode.as_str() {
        "floor" => {
            started = Instant::now();
            for w in 0..workers {
                let client = client.clone();
                tasks.spawn(async move {
                    let key = format!("bench-floor:{run_id}:{{w{w}}}");
                    for _ in 0..per_worker {
                        let _: Option<String> = client
                            .set(
                                &key,
                                "token",
                                Some(Expiration::PX(10_000)),
                                Some(SetOptions::NX),
                                false,
                            )
                            .await?;
                        let _: i64 = client.del(&key).await?;
                    }
                    Ok::<(), Error>(())
                });
            }
        }
        "locks" => {
            let locks = Locks::new(Arc::new(RedisLocks::new(
                client.clone(),
                format!("bench-locks:{run_id}:"),
            )));
            started = Instant::now();
            for w in 0..workers {
                let locks = locks.clone();
                tasks.spawn(async move {
                    let name = format!("w{w}");
                    for _ in 0..per_worker {
                        let guard = locks
                            .try_acquire(&name, Duration::from_secs(10))
                            .await?
                            .ok_or("lock held")?;
                        guard.release().await?;
                    }
                    Ok::<(), Error>(())
                });
            }
        }
        "l2" => {
            // The level itself: every read is one GET on Redis, with the
            // cache's key scheme and fail-fast guard, and nothing (L1,
            // coalescing) answering in its place.
            let level = RedisLevel::connect(&url, &options).await?;
            let namespace = format!("bench-l2-{run_id}");
            for k in 0..1000 {
                let value = format!("{{\"id\":{k},\"username\":\"user{k}\"}}");
                level
                    .set(
                        &namespace,
                        &format!("k{k}"),
                        value.as_bytes(),
                        Duration::from_secs(300),
                    )
                    .await;
            }
            let namespace: &'static str = Box::leak(namespace.into_boxed_str());
            started = Instant::now();
            for w in 0..workers {
                let level = level.clone();
                tasks.spawn(async move {
                    for i in 0..per_worker {
                        let key = format!("k{}", (i * 7 + w) % 1000);
                        level
                            .get(namespace, &key)
                            .await
                            .ok_or_else(|| format!("{key} was not read from Redis"))?;
                    }
                    Ok::<(), Error>(())
                });
            }
        }
        other => return Err(format!("unknown mode {other}").into()),
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = per_worker * workers;
    println!(
        "mode={mode} ops={done} seconds={seconds:.2} rate={:.0}",
        done as f64 / seconds
    );
    Ok(())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, url, ops, workers] = args.as_slice() else {
        eprintln!("usage: redis-locks <floor|locks|l2> <url> <ops> <workers>");
        std::process::exit(2);
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(
            mode.clone(),
            url.clone(),
            ops.parse()?,
            workers.parse()?,
        ))
}
