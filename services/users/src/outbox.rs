//! The outbox relay: publishes committed events from the outbox table to
//! the event bus, then marks them sent.
//!
//! A crash between commit and publish leaves events unsent, and the next
//! run publishes them; a crash between publish and marking publishes them
//! again, with the same CloudEvent id, which idempotent consumers ignore.
//! Nothing committed is lost. One replica relays at a time (a lease in the
//! database), so events leave in commit order and each aggregate's events
//! stay in version order under their key. The lease outlasts a publish
//! several times over (a publish that takes the whole Kafka timeout still
//! ends inside it), is renewed before every batch, and a batch's results
//! are recorded only while it is still held: a relay that stalled past its
//! lease cannot mark what the new holder is already relaying.
//!
//! An event that fails to publish `max_attempts` times is parked (kept with
//! its last error, `outbox_parked`), so one poison event does not stall the
//! rest; `RetryParkedEvents` puts them back. Only failures that are about
//! the event count: a refusal for good, or a failure while the bus took the
//! rest of the batch; a bus that is down parks nothing. Sent rows are pruned after
//! `retention` (the events themselves stay in the log).

use std::sync::Arc;
use std::time::Duration;

use common::events::{CloudEvent, EventBus, EventBusError};
use common::shutdown::CancellationToken;

use crate::store::{Store, StoreError, StoredEvent};

/// `source` attribute of every event this service publishes.
pub const SOURCE: &str = "/users";

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot read or update the outbox")]
    Store(#[from] StoreError),
    #[error("cannot publish an outbox event")]
    Publish(#[from] EventBusError),
}

#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Events published per round.
    pub batch: i64,
    /// Pause when the outbox is empty.
    pub idle_poll: Duration,
    /// How long a lease lasts without renewal; several times the bus's
    /// publish timeout.
    pub lease: Duration,
    /// This replica's name in the lease.
    pub holder: String,
    /// Failed publishes before an event is parked.
    pub max_attempts: i32,
    /// How long sent rows are kept.
    pub retention: Duration,
}

impl RelayConfig {
    /// The lease for a bus whose publishes give up after `publish_timeout`.
    pub fn lease_for(publish_timeout: Duration) -> Duration {
        (publish_timeout * 3).max(Duration::from_secs(10))
    }
}

pub struct OutboxRelay {
    store: Store,
    bus: Arc<dyn EventBus>,
    config: RelayConfig,
}

pub fn cloud_event(event: &StoredEvent) -> CloudEvent {
    CloudEvent {
        id: event.event_id.clone(),
        source: SOURCE.to_owned(),
        event_type: event.event_type.clone(),
        subject: event.aggregate_id.to_string(),
        time: event.occurred_at.clone(),
        aggregate_version: u64::try_from(event.version).unwrap_or_default(),
        schema_version: u32::try_from(event.schema_version).unwrap_or(1),
        traceparent: event.traceparent.clone(),
        data: event.payload.clone().into_bytes(),
    }
}

impl OutboxRelay {
    pub fn new(store: Store, bus: Arc<dyn EventBus>, config: RelayConfig) -> Self {
        Self { store, bus, config }
    }

    /// Publishes one batch; returns how many events were marked sent.
    ///
    /// The batch is handed to the bus at once and every event that went
    /// out is marked sent; failed ones are retried next round. Order per
    /// aggregate comes from the producer: it is idempotent and keyed by
    /// aggregate, so when one record of a partition fails for a passing
    /// reason, the ones behind it fail too and are retried behind it. An
    /// event refused for good is parked, which leaves a gap in its
    /// aggregate's versions for consumers to see.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        // Taken or renewed per batch: a batch always starts with a full
        // lease ahead of it.
        if !self
            .store
            .try_lead(&self.config.holder, self.config.lease)
            .await?
        {
            return Ok(0);
        }
        let pending = self.store.pending_outbox(self.config.batch).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let events: Vec<CloudEvent> = pending.iter().map(|e| cloud_event(&e.event)).collect();
        let results = futures_util::future::join_all(
            pending
                .iter()
                .zip(&events)
                .map(|(entry, event)| self.bus.publish(&entry.topic, event)),
        )
        .await;
        // A failure counts against an event (towards parking) when the
        // bus refused that event for good, or took others of the same
        // batch: when every publish failed, the bus is down, which says
        // nothing about any one event, and nothing is parked for it.
        let bus_took_some = results.iter().any(Result::is_ok);
        let mut sent = Vec::with_capacity(pending.len());
        let mut failure = None;
        for (entry, result) in pending.iter().zip(results) {
            match result {
                Ok(()) => {
                    metrics::counter!("outbox_published_total", "topic" => entry.topic.clone())
                        .increment(1);
                    sent.push(entry.event.position);
                }
                Err(error) if !(bus_took_some || error.is_permanent()) => {
                    failure.get_or_insert(error);
                }
                Err(error) => {
                    let parked = self
                        .store
                        .record_publish_failure(
                            entry.event.position,
                            &common::exit::chain(&error),
                            self.config.max_attempts,
                        )
                        .await?;
                    if parked {
                        metrics::counter!("outbox_parked_total").increment(1);
                        tracing::error!(
                            position = entry.event.position,
                            event_id = entry.event.event_id,
                            error = %common::exit::chain(&error),
                            "outbox event parked after repeated publish failures"
                        );
                    }
                    failure.get_or_insert(error);
                }
            }
        }
        if !self.store.mark_sent(&sent, &self.config.holder).await? {
            tracing::warn!(
                "the relay lease expired during a batch; its results are left to the new holder"
            );
            return Ok(0);
        }
        match failure {
            Some(error) => {
                metrics::counter!("outbox_publish_failures_total").increment(1);
                Err(error.into())
            }
            None => Ok(sent.len()),
        }
    }

    /// Relays until `stop` is cancelled, while holding the lease.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut last_housekeeping: Option<tokio::time::Instant> = None;
        loop {
            if last_housekeeping.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                last_housekeeping = Some(tokio::time::Instant::now());
                self.housekeeping().await;
            }
            let pause = match self.relay_once().await {
                Ok(n) if i64::try_from(n).unwrap_or(0) >= self.config.batch => Duration::ZERO,
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    self.config.idle_poll
                }
                Err(error) => {
                    tracing::warn!(error = %common::exit::chain(&error), "outbox relay round failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    backoff
                }
            };
            if let Ok(lag) = self.store.outbox_lag_ms().await {
                metrics::gauge!("outbox_lag_seconds").set(lag as f64 / 1000.0);
            }
            // An idle relay wakes as soon as a command commits; the poll
            // still covers commits made by other replicas.
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
                () = self.store.events_queued(), if pause == self.config.idle_poll => {}
            }
        }
        if let Err(error) = self.store.release_lead(&self.config.holder).await {
            tracing::warn!(error = %common::exit::chain(&error), "could not release the relay lease");
        }
    }

    /// Prunes old sent rows and day-old idempotency records, and reports
    /// how many events are parked.
    async fn housekeeping(&self) {
        match self.store.prune_sent(self.config.retention).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "pruned sent outbox rows"),
            Err(error) => {
                tracing::warn!(error = %common::exit::chain(&error), "could not prune the outbox");
            }
        }
        // Idempotency records are kept a day (what clients retry within).
        if let Err(error) = self
            .store
            .prune_idempotency(Duration::from_secs(24 * 3600))
            .await
        {
            tracing::warn!(error = %common::exit::chain(&error), "could not prune idempotency keys");
        }
        if let Ok(parked) = self.store.parked_outbox().await {
            metrics::gauge!("outbox_parked").set(parked.len() as f64);
        }
    }
}
