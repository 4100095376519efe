//! The index, fed from `users.events` and `posts.events` with a consumer
//! group.
//!
//! Events are taken in batches (up to `SEARCH_BATCH_SIZE`, waiting up to
//! `SEARCH_BATCH_WAIT` for more once one arrived) and written in one index
//! commit; offsets are committed only once the index has the batch, so a
//! crash replays it, which changes nothing (writes are versioned). An
//! event this service does not index, or whose payload does not decode, is
//! counted in `search_events_skipped_total{reason}` and committed. An index
//! that fails is retried, with backoff, without committing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use common::events::{Delivery, EventBus, Subscription};

use crate::App;
use crate::document::{Change, change, time_ms};

pub const USERS_TOPIC: &str = "users.events";
pub const POSTS_TOPIC: &str = "posts.events";

/// What the consumer needs of its settings.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    pub size: usize,
    pub wait: Duration,
}

/// The changes `deliveries` make, in order.
fn changes(deliveries: &[Delivery]) -> Vec<Change> {
    let mut changes = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let event = &delivery.event;
        let at = time_ms(&event.time).unwrap_or_else(common::jobs::now_ms);
        let version = event.aggregate_version;
        match change(&event.event_type, &event.data, version, at) {
            Ok(change) => changes.push(change),
            Err(skip) => {
                metrics::counter!("search_events_skipped_total", "reason" => skip.as_str())
                    .increment(1);
            }
        }
    }
    changes
}

/// Consumes `topic` until `stop`.
pub async fn run(
    app: Arc<App>,
    bus: Arc<dyn EventBus>,
    topic: &'static str,
    group: String,
    batching: Batching,
    stop: CancellationToken,
) {
    let Some(mut subscription) =
        common::events::subscribe_until_stopped(&*bus, topic, &group, &stop).await
    else {
        return;
    };
    let indexed = metrics::counter!("search_documents_indexed_total", "source" => "events");
    loop {
        let Some(batch) = next_batch(&mut *subscription, batching, &stop).await else {
            return;
        };
        let changes = changes(&batch);
        if !apply(&app, &changes, &stop).await {
            return;
        }
        indexed.increment(changes.len() as u64);
        let now = common::jobs::now_ms();
        for delivery in &batch {
            if let Some(at) = time_ms(&delivery.event.time) {
                // From the event to its effect being searchable: what a
                // user who just wrote a post waits for.
                metrics::histogram!("search_index_lag_seconds")
                    .record((now - at).max(0) as f64 / 1000.0);
            }
        }
        commit(&mut *subscription, &batch, &stop).await;
    }
}

/// One event, then whatever follows within the wait, up to the size.
async fn next_batch(
    subscription: &mut dyn Subscription,
    batching: Batching,
    stop: &CancellationToken,
) -> Option<Vec<Delivery>> {
    let mut batch = Vec::new();
    let first = loop {
        let next = tokio::select! {
            () = stop.cancelled() => return None,
            next = subscription.next() => next,
        };
        match next {
            Ok(delivery) => break delivery,
            Err(error) => skipped(&error),
        }
    };
    batch.push(first);
    let deadline = tokio::time::Instant::now() + batching.wait;
    while batch.len() < batching.size {
        let next = tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => break,
            next = subscription.next() => next,
        };
        match next {
            Ok(delivery) => batch.push(delivery),
            Err(error) => skipped(&error),
        }
    }
    Some(batch)
}

fn skipped(error: &common::events::EventBusError) {
    // A message that is not a CloudEvent was skipped by the bus.
    metrics::counter!("search_events_skipped_total", "reason" => "not_an_event").increment(1);
    tracing::warn!(error = %common::exit::chain(error), "skipped a message");
}

/// Writes `changes`, retrying until it works; false if told to stop first
/// (the batch is then redelivered to whoever consumes next).
async fn apply(app: &App, changes: &[Change], stop: &CancellationToken) -> bool {
    let mut pause = Duration::from_millis(100);
    loop {
        match app.index.apply(changes).await {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(error = %error, "cannot index a batch of events yet");
                metrics::counter!("search_index_failures_total").increment(1);
                tokio::select! {
                    () = stop.cancelled() => return false,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Commits the last delivery of each partition in `batch`.
async fn commit(subscription: &mut dyn Subscription, batch: &[Delivery], stop: &CancellationToken) {
    let mut last: HashMap<(&str, i32), &Delivery> = HashMap::new();
    for delivery in batch {
        last.insert((delivery.topic.as_str(), delivery.partition), delivery);
    }
    for delivery in last.values() {
        // A failed commit only means a redelivery later, which changes
        // nothing.
        if let Err(error) = subscription.commit(delivery).await
            && !stop.is_cancelled()
        {
            tracing::warn!(error = %common::exit::chain(&error), "cannot commit an offset");
        }
    }
}
