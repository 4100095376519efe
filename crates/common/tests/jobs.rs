//! The job queue's contract, run against every backend pairing of message
//! queue and store.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::jobs::{
    Backoff, Enqueued, InProcessQueue, JobError, JobFailure, JobQueue, JobRecord, JobState,
    JobStore, JobsConfig, JobsSettings, MemoryJobStore, NewJob, RabbitMqConfig, RabbitMqQueue,
    RunAt, Schedule, Workers, handler_fn,
};
use serde_json::json;
use test_support::TempDir;

#[path = "support/jobs_db.rs"]
mod jobs_db;
use jobs_db::{fresh_postgres_url, sql_store};
use tokio::sync::Mutex;

/// Every pairing under test, fresh for each test: RabbitMQ under a prefix
/// of its own, each SQL store in a database of its own (a SQLite file in
/// the returned directory).
async fn queues() -> Vec<(&'static str, JobQueue, Option<TempDir>)> {
    let dir = TempDir::new("jobs-sqlite");
    let sqlite = sql_store(&format!("{}?mode=rwc", dir.sqlite_url("jobs.db"))).await;
    let postgres = sql_store(&fresh_postgres_url().await).await;
    vec![
        ("in-process+memory", JobQueue::in_process(), None),
        (
            "in-process+sqlite",
            JobQueue::new(
                sqlite,
                Arc::new(InProcessQueue::default()),
                JobsConfig::default(),
            ),
            Some(dir),
        ),
        (
            "rabbitmq+memory",
            rabbitmq(Arc::new(MemoryJobStore::default())).await,
            None,
        ),
        ("rabbitmq+postgres", rabbitmq(postgres).await, None),
    ]
}

async fn rabbitmq(store: Arc<dyn JobStore>) -> JobQueue {
    rabbitmq_with(store, JobsConfig::default()).await
}

async fn rabbitmq_with(store: Arc<dyn JobStore>, jobs: JobsConfig) -> JobQueue {
    let url = test_support::backends::amqp_url();
    let mut config = RabbitMqConfig::new(url.clone());
    config.prefix = test_support::backends::unique("jobs-test");
    // The machine's broker outlives the test: its queues go after it.
    config.queue_expiry = Some(Duration::from_secs(120));
    let broker = RabbitMqQueue::new(config);
    broker
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", test_support::backends::missing("RabbitMQ", &url, &e)));
    JobQueue::new(store, Arc::new(broker), jobs)
}

const FAST: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(2),
};

async fn wait_for_state(queue: &JobQueue, id: common::jobs::JobId, state: JobState) -> JobRecord {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let job = queue.get(id).await.unwrap().unwrap();
        if job.state == state {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} stuck in {:?}, wanted {state:?}",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Run times per call of a handler that fails its first `failures` calls.
fn flaky(failures: usize) -> (Arc<Mutex<Vec<Instant>>>, Arc<dyn common::jobs::Handler>) {
    let runs = Arc::new(Mutex::new(Vec::new()));
    let seen = runs.clone();
    let handler = handler_fn(move |_job| {
        let seen = seen.clone();
        Box::pin(async move {
            let mut runs = seen.lock().await;
            runs.push(Instant::now());
            if runs.len() <= failures {
                Err(JobFailure::retry(format!("failure {}", runs.len())))
            } else {
                Ok(())
            }
        })
    });
    (runs, handler)
}

#[tokio::test]
async fn a_job_runs_once_and_is_recorded_as_succeeded() {
    for (name, queue, _dir) in queues().await {
        let (runs, handler) = flaky(0);
        let pool = queue.start(Workers::new().register("mail.send", handler, 4));
        let id = queue
            .enqueue(NewJob::new("mail.send", json!({"to": 7})))
            .await
            .unwrap()
            .id();
        let job = wait_for_state(&queue, id, JobState::Succeeded).await;
        assert_eq!(job.attempts, 1, "{name}");
        assert_eq!(job.payload, json!({"to": 7}), "{name}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(runs.lock().await.len(), 1, "{name}: once");
        pool.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_failing_job_is_retried_with_growing_delays_until_it_succeeds() {
    for (name, queue, _dir) in queues().await {
        let (runs, handler) = flaky(2);
        let pool = queue.start(Workers::new().register_with("flaky", handler, 1, FAST));
        let id = queue
            .enqueue(NewJob::new("flaky", json!(null)))
            .await
            .unwrap()
            .id();
        let job = wait_for_state(&queue, id, JobState::Succeeded).await;
        assert_eq!(job.attempts, 3, "{name}");
        assert_eq!(job.last_error.as_deref(), Some("failure 2"), "{name}");
        let runs = runs.lock().await.clone();
        assert_eq!(runs.len(), 3, "{name}");
        let (first, second) = (runs[1] - runs[0], runs[2] - runs[1]);
        // The shortest jittered delay, less what the engine lets a
        // delivery be early by (5 ms, a delay queue's rounding) and the
        // millisecond its due time is rounded to.
        let shortest = FAST.base * 3 / 4 - Duration::from_millis(6);
        assert!(first >= shortest, "{name}: {first:?}");
        assert!(
            second > first,
            "{name}: delays grow: {first:?} then {second:?}"
        );
        pool.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_job_that_always_fails_is_dead_after_max_attempts_and_a_retry_runs_it_again() {
    for (name, queue, _dir) in queues().await {
        let (runs, handler) = flaky(3);
        let pool = queue.start(Workers::new().register_with("doomed", handler, 1, FAST));
        let id = queue
            .enqueue(NewJob::new("doomed", json!(1)).max_attempts(3))
            .await
            .unwrap()
            .id();
        let dead = wait_for_state(&queue, id, JobState::Dead).await;
        assert_eq!(dead.attempts, 3, "{name}");
        assert_eq!(dead.last_error.as_deref(), Some("failure 3"), "{name}");
        let listed = queue.list(Some(JobState::Dead), None, 10).await.unwrap();
        assert_eq!(
            listed.iter().map(|j| j.id).collect::<Vec<_>>(),
            [id],
            "{name}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(runs.lock().await.len(), 3, "{name}: never retried for ever");

        let revived = queue.retry(id).await.unwrap().unwrap();
        assert_eq!(revived.attempts, 0, "{name}");
        let done = wait_for_state(&queue, id, JobState::Succeeded).await;
        assert_eq!(done.attempts, 1, "{name}: attempts start again");
        assert!(
            queue.retry(id).await.unwrap().is_none(),
            "{name}: only dead jobs"
        );
        pool.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_hundred_concurrent_enqueues_of_one_key_are_one_job() {
    for (name, queue, _dir) in queues().await {
        let (runs, handler) = flaky(0);
        let mut enqueues = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let queue = queue.clone();
            enqueues.spawn(async move {
                queue
                    .enqueue(NewJob::new("digest", json!({"user": 1})).unique("digest:user:1"))
                    .await
                    .unwrap()
            });
        }
        let answers = enqueues.join_all().await;
        let new: Vec<_> = answers
            .iter()
            .filter(|a| matches!(a, Enqueued::New(_)))
            .collect();
        assert_eq!(new.len(), 1, "{name}");
        assert!(answers.iter().all(|a| a.id() == new[0].id()), "{name}");
        let pool = queue.start(Workers::new().register("digest", handler, 4));
        wait_for_state(&queue, new[0].id(), JobState::Succeeded).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(runs.lock().await.len(), 1, "{name}");
        // Done, the key is free again.
        let again = queue
            .enqueue(NewJob::new("digest", json!({"user": 1})).unique("digest:user:1"))
            .await
            .unwrap();
        assert!(
            matches!(again, Enqueued::New(id) if id != new[0].id()),
            "{name}"
        );
        pool.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_scheduled_job_runs_at_its_time_and_a_discarded_one_never() {
    for (name, queue, _dir) in queues().await {
        let (runs, handler) = flaky(0);
        let pool = queue.start(Workers::new().register("later", handler, 2));
        let enqueued = Instant::now();
        let id = queue
            .enqueue(
                NewJob::new("later", json!(1)).run_at(RunAt::After(Duration::from_millis(400))),
            )
            .await
            .unwrap()
            .id();
        let discarded = queue
            .enqueue(
                NewJob::new("later", json!(2)).run_at(RunAt::After(Duration::from_millis(200))),
            )
            .await
            .unwrap()
            .id();
        assert!(queue.discard(discarded).await.unwrap(), "{name}");
        assert_eq!(
            queue.get(id).await.unwrap().unwrap().state,
            JobState::Queued,
            "{name}"
        );
        wait_for_state(&queue, id, JobState::Succeeded).await;
        let runs = runs.lock().await.clone();
        assert_eq!(runs.len(), 1, "{name}: the discarded job did not run");
        assert!(
            runs[0] - enqueued >= Duration::from_millis(390),
            "{name}: not early"
        );
        assert_eq!(
            queue.get(discarded).await.unwrap().unwrap().state,
            JobState::Discarded
        );
        pool.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn bad_jobs_are_refused_or_dead_at_once_and_never_crash_a_worker() {
    for (name, queue, _dir) in queues().await {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let handler = handler_fn(move |job: JobRecord| {
            let counted = counted.clone();
            Box::pin(async move {
                counted.fetch_add(1, Ordering::SeqCst);
                #[derive(serde::Deserialize)]
                #[allow(dead_code)]
                struct Mail {
                    to: u64,
                }
                job.payload_as::<Mail>()?;
                Ok(())
            })
        });
        let pool = queue.start(Workers::new().register_with("mail", handler, 2, FAST));
        for kind in ["", "Upper", "has space", &"x".repeat(101)] {
            let refused = queue.enqueue(NewJob::new(kind, json!(1))).await;
            assert!(
                matches!(refused, Err(JobError::Invalid(_))),
                "{name}: kind {kind:?}"
            );
        }
        let huge = json!({"blob": "x".repeat(70 * 1024)});
        assert!(
            matches!(
                queue.enqueue(NewJob::new("mail", huge)).await,
                Err(JobError::Invalid(_))
            ),
            "{name}"
        );
        let bad = queue
            .enqueue(NewJob::new("mail", json!({"to": "nobody"})))
            .await
            .unwrap()
            .id();
        let dead = wait_for_state(&queue, bad, JobState::Dead).await;
        assert_eq!(dead.attempts, 1, "{name}: not retried");
        assert!(
            dead.last_error.unwrap().contains("does not decode"),
            "{name}"
        );
        // A kind nobody handles waits, queued, for a worker that does.
        let orphan = queue
            .enqueue(NewJob::new("nobody.handles", json!(1)))
            .await
            .unwrap()
            .id();
        // And the worker still works.
        let good = queue
            .enqueue(NewJob::new("mail", json!({"to": 1})))
            .await
            .unwrap()
            .id();
        wait_for_state(&queue, good, JobState::Succeeded).await;
        assert_eq!(
            queue.get(orphan).await.unwrap().unwrap().state,
            JobState::Queued
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2, "{name}");
        pool.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn workers_run_at_most_their_concurrency_at_once() {
    for (name, queue, _dir) in queues().await {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (r, p) = (running.clone(), peak.clone());
        let handler = handler_fn(move |_| {
            let (r, p) = (r.clone(), p.clone());
            Box::pin(async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
        });
        let pool = queue.start(Workers::new().register("bounded", handler, 2));
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(
                queue
                    .enqueue(NewJob::new("bounded", json!(i)))
                    .await
                    .unwrap()
                    .id(),
            );
        }
        for id in ids {
            wait_for_state(&queue, id, JobState::Succeeded).await;
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "{name}");
        pool.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_drain_finishes_quick_jobs_and_queues_slow_ones_again_uncounted() {
    for (name, queue, _dir) in queues().await {
        let handler = handler_fn(|job: JobRecord| {
            Box::pin(async move {
                let millis: u64 = job.payload_as()?;
                tokio::time::sleep(Duration::from_millis(millis)).await;
                Ok(())
            })
        });
        let pool = queue.start(Workers::new().register("sleep", handler.clone(), 2));
        let quick = queue
            .enqueue(NewJob::new("sleep", json!(100)))
            .await
            .unwrap()
            .id();
        let slow = queue
            .enqueue(NewJob::new("sleep", json!(60_000)))
            .await
            .unwrap()
            .id();
        wait_for_state(&queue, slow, JobState::Running).await;
        let drained = Instant::now();
        pool.drain(Duration::from_millis(400)).await;
        assert!(
            drained.elapsed() < Duration::from_secs(3),
            "{name}: the deadline holds"
        );
        assert_eq!(
            queue.get(quick).await.unwrap().unwrap().state,
            JobState::Succeeded,
            "{name}"
        );
        let released = queue.get(slow).await.unwrap().unwrap();
        assert_eq!(released.state, JobState::Queued, "{name}");
        assert_eq!(released.attempts, 0, "{name}: the cut run does not count");
    }
}

#[tokio::test]
async fn a_recurring_job_run_by_two_replicas_fires_once_per_period() {
    for (name, queue, _dir) in queues().await {
        let (runs, handler) = flaky(0);
        let replica = |handler| {
            Workers::new().register("tick", handler, 2).schedule(
                Schedule::new(
                    "every-second",
                    "* * * * * *",
                    NewJob::new("tick", json!(null)),
                )
                .unwrap(),
            )
        };
        // Two replicas: two pools on one store and one queue.
        let a = queue.start(replica(handler.clone()));
        let b = queue.clone().start(replica(handler));
        tokio::time::sleep(Duration::from_millis(3500)).await;
        a.drain(Duration::from_secs(1)).await;
        b.drain(Duration::from_secs(1)).await;
        let jobs = queue.list(None, None, 100).await.unwrap();
        let mut firings: Vec<&str> = jobs
            .iter()
            .filter_map(|j| j.unique_key.as_deref())
            .collect();
        let fired = firings.len();
        firings.dedup();
        assert_eq!(
            firings.len(),
            fired,
            "{name}: each firing once: {firings:?}"
        );
        assert!(
            (3..=4).contains(&fired),
            "{name}: fired {fired} times in 3.5 s"
        );
        assert!(runs.lock().await.len() >= 3, "{name}");
    }
}

#[test]
fn a_schedule_that_is_not_cron_is_refused() {
    for bad in ["", "every day", "61 * * * *", "* * * *"] {
        assert!(
            matches!(
                Schedule::new("x", bad, NewJob::new("x", json!(null))),
                Err(JobError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert!(Schedule::new("digest", "0 9 * * *", NewJob::new("digest", json!(null))).is_ok());
}

#[tokio::test]
async fn an_in_process_queue_on_sqlite_hands_out_its_jobs_again_after_a_crash() {
    let dir = TempDir::new("jobs-recovery");
    let url = format!("{}?mode=rwc", dir.sqlite_url("jobs.db"));
    let settings = JobsSettings::from_env(
        &common::config::Env::from_map("T", std::iter::empty::<(&str, &str)>()),
        "t",
    )
    .unwrap();
    let shared = common::service::Shared::default();
    let first = settings.open(sql_store(&url).await, &shared).await.unwrap();
    let hanging = handler_fn(|_| {
        Box::pin(async {
            std::future::pending::<()>().await;
            Ok(())
        })
    });
    let pool = first.start(Workers::new().register("crash", hanging, 1));
    let running = first
        .enqueue(NewJob::new("crash", json!(1)))
        .await
        .unwrap()
        .id();
    let waiting = first
        .enqueue(NewJob::new("crash", json!(2)))
        .await
        .unwrap()
        .id();
    let later = first
        .enqueue(NewJob::new("crash", json!(3)).run_at(RunAt::After(Duration::from_millis(300))))
        .await
        .unwrap()
        .id();
    wait_for_state(&first, running, JobState::Running).await;
    // The process dies: no drain, the in-process messages are gone.
    drop(pool);
    drop(first);

    let second = settings.open(sql_store(&url).await, &shared).await.unwrap();
    let (runs, handler) = flaky(0);
    let pool = second.start(Workers::new().register("crash", handler, 2));
    for id in [running, waiting, later] {
        let job = wait_for_state(&second, id, JobState::Succeeded).await;
        assert_eq!(job.attempts, 1, "the crashed run is not counted");
    }
    assert_eq!(runs.lock().await.len(), 3);
    pool.drain(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_panicking_handler_counts_as_a_failed_attempt_not_a_loop() {
    for (name, queue, _dir) in queues().await {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let handler = handler_fn(move |_| {
            let counted = counted.clone();
            Box::pin(async move {
                counted.fetch_add(1, Ordering::SeqCst);
                panic!("a bug in the handler");
            })
        });
        let pool = queue.start(Workers::new().register_with("buggy", handler, 1, FAST));
        let id = queue
            .enqueue(NewJob::new("buggy", json!(1)).max_attempts(2))
            .await
            .unwrap()
            .id();
        let dead = wait_for_state(&queue, id, JobState::Dead).await;
        assert_eq!(dead.attempts, 2, "{name}");
        assert_eq!(
            dead.last_error.as_deref(),
            Some("the handler panicked"),
            "{name}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{name}");
        pool.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_replica_draining_finishes_its_running_job_without_another_replica_taking_it() {
    for (name, queue, _dir) in queues().await {
        let (runs, _) = flaky(0);
        let seen = runs.clone();
        let slow = handler_fn(move |_| {
            let seen = seen.clone();
            Box::pin(async move {
                seen.lock().await.push(Instant::now());
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok(())
            })
        });
        let a = queue.start(Workers::new().register("deploy", slow.clone(), 1));
        let id = queue
            .enqueue(NewJob::new("deploy", json!(1)))
            .await
            .unwrap()
            .id();
        wait_for_state(&queue, id, JobState::Running).await;
        // The new version comes up, the old one drains.
        let b = queue
            .clone()
            .start(Workers::new().register("deploy", slow, 1));
        a.drain(Duration::from_secs(5)).await;
        let job = wait_for_state(&queue, id, JobState::Succeeded).await;
        assert_eq!(job.attempts, 1, "{name}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            runs.lock().await.len(),
            1,
            "{name}: run once, by the draining replica"
        );
        b.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn an_error_with_nul_bytes_is_stored_and_an_unreadable_payload_refused() {
    for (name, queue, _dir) in queues().await {
        let handler = handler_fn(|_| Box::pin(async { Err(JobFailure::permanent("bad\0byte")) }));
        let pool = queue.start(Workers::new().register("nul", handler, 1));
        let id = queue
            .enqueue(NewJob::new("nul", json!(1)))
            .await
            .unwrap()
            .id();
        let dead = wait_for_state(&queue, id, JobState::Dead).await;
        assert!(dead.last_error.unwrap().starts_with("bad"), "{name}");
        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        assert!(
            matches!(
                queue.enqueue(NewJob::new("nul", deep)).await,
                Err(JobError::Invalid(_))
            ),
            "{name}"
        );
        assert!(
            matches!(
                queue
                    .enqueue(NewJob::new("nul", json!(1)).unique("a\0b"))
                    .await,
                Err(JobError::Invalid(_))
            ),
            "{name}"
        );
        pool.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn services_sharing_one_in_process_queue_never_take_each_others_jobs() {
    let shared = common::service::Shared::default().with_jobs(Arc::new(InProcessQueue::default()));
    let empty = std::iter::empty::<(&str, &str)>;
    let mut pools = Vec::new();
    let mut counts = Vec::new();
    let mut queues = Vec::new();
    for service in ["mail", "chat"] {
        let env = common::config::Env::from_map(&service.to_uppercase(), empty());
        let settings = JobsSettings::from_env(&env, service).unwrap();
        let queue = settings
            .open(Arc::new(MemoryJobStore::default()), &shared)
            .await
            .unwrap();
        let (runs, handler) = flaky(0);
        pools.push(queue.start(Workers::new().register("digest", handler, 2)));
        counts.push(runs);
        queues.push(queue);
    }
    let mut ids = Vec::new();
    for queue in &queues {
        let mut mine = Vec::new();
        for i in 0..10 {
            mine.push(
                queue
                    .enqueue(NewJob::new("digest", json!(i)))
                    .await
                    .unwrap()
                    .id(),
            );
        }
        ids.push(mine);
    }
    for (queue, mine) in queues.iter().zip(&ids) {
        for id in mine {
            wait_for_state(queue, *id, JobState::Succeeded).await;
        }
    }
    for runs in &counts {
        assert_eq!(runs.lock().await.len(), 10, "each service ran its own ten");
    }
    for pool in pools {
        pool.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_job_whose_message_was_lost_is_announced_again_by_the_sweeper() {
    let postgres = sql_store(&fresh_postgres_url().await).await;
    let stores: Vec<(&str, Arc<dyn JobStore>)> = vec![
        ("rabbitmq+memory", Arc::new(MemoryJobStore::default())),
        ("rabbitmq+postgres", postgres),
    ];
    for (name, store) in stores {
        let config = JobsConfig {
            sweep_after: Duration::from_millis(500),
            ..JobsConfig::default()
        };
        let queue = rabbitmq_with(store.clone(), config).await;
        // Stored, but its message never reached the broker (or the broker
        // lost it) a while ago.
        let long_ago = common::jobs::now_ms() - 5_000;
        let lost = JobRecord {
            id: uuid::Uuid::now_v7(),
            kind: "swept".into(),
            payload: json!(1),
            state: JobState::Queued,
            attempts: 0,
            max_attempts: 3,
            run_at_ms: long_ago,
            unique_key: None,
            last_error: None,
            created_at_ms: long_ago,
            updated_at_ms: long_ago,
        };
        store.insert(&lost).await.unwrap();
        let (runs, handler) = flaky(0);
        let pool = queue.start(Workers::new().register("swept", handler, 1));
        wait_for_state(&queue, lost.id, JobState::Succeeded).await;
        assert_eq!(runs.lock().await.len(), 1, "{name}");
        pool.drain(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_message_that_is_not_a_job_is_dead_lettered_and_the_worker_goes_on() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions};
    let url = test_support::backends::amqp_url();
    let mut config = RabbitMqConfig::new(url.clone());
    config.prefix = test_support::backends::unique("jobs-test");
    config.queue_expiry = Some(Duration::from_secs(120));
    let prefix = config.prefix.clone();
    let broker = RabbitMqQueue::new(config);
    broker.connect().await.unwrap();
    let queue = JobQueue::new(
        Arc::new(MemoryJobStore::default()),
        Arc::new(broker),
        JobsConfig::default(),
    );
    let (runs, handler) = flaky(0);
    let pool = queue.start(Workers::new().register("mail", handler, 1));
    // A job first, so the queues exist; then garbage and another kind's job
    // straight into mail's queue, as a foreign publisher might.
    let good = queue
        .enqueue(NewJob::new("mail", json!(1)))
        .await
        .unwrap()
        .id();
    wait_for_state(&queue, good, JobState::Succeeded).await;
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let foreign = format!(
        r#"{{"id":"{}","kind":"billing","run_at_ms":0}}"#,
        uuid::Uuid::now_v7()
    );
    for body in [b"not json at all".as_slice(), foreign.as_bytes()] {
        channel
            .basic_publish(
                prefix.as_str().into(),
                "mail".into(),
                BasicPublishOptions::default(),
                body,
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let after = queue
        .enqueue(NewJob::new("mail", json!(2)))
        .await
        .unwrap()
        .id();
    wait_for_state(&queue, after, JobState::Succeeded).await;
    assert_eq!(runs.lock().await.len(), 2, "only the real jobs ran");
    let dead_queue = format!("{prefix}.dlq.mail");
    let mut dead = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while dead < 2 && Instant::now() < deadline {
        match channel
            .basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(_) => dead += 1,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(dead, 2, "both are in the dead-letter queue");
    pool.drain(Duration::from_secs(1)).await;
}
