//! A RabbitMQ node of the test's own stopped between enqueue and consume,
//! and again while handlers run: once it is back, every confirmed job has
//! run and its effect is applied once, with no restart of the workers;
//! enqueues during the outage fail clearly and leave nothing behind.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::jobs::{
    JobError, JobId, JobQueue, JobRecord, JobState, JobStore, JobsConfig, MemoryJobStore, NewJob,
    RabbitMqConfig, RabbitMqQueue, Workers, handler_fn,
};
use serde_json::json;
use test_support::{PrivateRabbit, eventually};
use tokio::sync::Mutex;

#[path = "support/jobs_db.rs"]
mod jobs_db;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_broker_restarts_every_confirmed_job_runs_once_with_records_in_memory() {
    outage_with(Arc::new(MemoryJobStore::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_broker_restarts_every_confirmed_job_runs_once_with_records_in_postgres() {
    outage_with(jobs_db::sql_store(&jobs_db::fresh_postgres_url().await).await).await;
}

async fn outage_with(store: Arc<dyn JobStore>) {
    let mut broker = PrivateRabbit::start();
    let mut config = RabbitMqConfig::new(broker.url());
    config.connect_timeout = Duration::from_secs(1);
    let rabbit = RabbitMqQueue::new(config);
    rabbit.connect().await.unwrap();
    let queue = JobQueue::new(
        store,
        Arc::new(rabbit),
        JobsConfig {
            publish_timeout: Duration::from_secs(2),
            ..JobsConfig::default()
        },
    );
    // The effect, keyed by job id as an idempotent handler keeps it: how
    // often each job's effect was applied, and how often it ran at all.
    let effects: Arc<Mutex<HashMap<JobId, (u32, u32)>>> = Arc::default();
    let applied = effects.clone();
    let handler = handler_fn(move |job: JobRecord| {
        let applied = applied.clone();
        Box::pin(async move {
            let millis: u64 = job.payload_as()?;
            tokio::time::sleep(Duration::from_millis(millis)).await;
            let mut effects = applied.lock().await;
            let entry = effects.entry(job.id).or_default();
            entry.1 += 1;
            if entry.0 == 0 {
                entry.0 = 1;
            }
            Ok(())
        })
    });

    // Confirmed, then the broker goes before any worker took them.
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            queue
                .enqueue(NewJob::new("outage", json!(0)))
                .await
                .unwrap()
                .id(),
        );
    }
    broker.stop();
    let refused = queue.enqueue(NewJob::new("outage", json!(0))).await;
    assert!(
        matches!(refused, Err(JobError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(
        queue.list(None, None, 100).await.unwrap().len(),
        20,
        "a refused enqueue leaves no job behind"
    );
    let pool = queue.start(Workers::new().register("outage", handler, 4));
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.restart();
    for id in &ids {
        wait_for(&queue, *id, JobState::Succeeded).await;
    }

    // Now while handlers run: the broker stops under them.
    let mut slow = Vec::new();
    for _ in 0..8 {
        slow.push(
            queue
                .enqueue(NewJob::new("outage", json!(800)))
                .await
                .unwrap()
                .id(),
        );
    }
    eventually(Duration::from_secs(10), "a slow job to start", || async {
        let running = queue.list(Some(JobState::Running), None, 10).await.unwrap();
        !running.is_empty()
    })
    .await;
    broker.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart();
    for id in &slow {
        wait_for(&queue, *id, JobState::Succeeded).await;
    }
    let effects = effects.lock().await;
    for id in ids.iter().chain(&slow) {
        let (applied, _) = effects.get(id).copied().unwrap_or_default();
        assert_eq!(applied, 1, "job {id}: its effect once");
    }
    // Jobs the outage caught waiting ran once; one it caught running may
    // have run again (at least once), which its idempotent effect absorbs.
    for id in &ids {
        assert_eq!(effects[id].1, 1, "job {id} ran once");
    }
    assert_eq!(effects.len(), 28, "no job the broker did not confirm ran");
    drop(effects);
    pool.drain(Duration::from_secs(2)).await;
}

async fn wait_for(queue: &JobQueue, id: JobId, state: JobState) {
    eventually(
        Duration::from_secs(30),
        "a job to finish after the outage",
        || async {
            queue
                .get(id)
                .await
                .unwrap()
                .is_some_and(|j| j.state == state)
        },
    )
    .await;
}
