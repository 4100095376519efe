//! The in-process bus for the embedded mode: one append-only log per topic
//! and a committed offset per consumer group, like a one-partition Kafka.
//! Members of one group share its position (each event goes to one of
//! them); different groups each see every event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{CloudEvent, Delivery, EventBus, EventBusError, Subscription};

#[derive(Default)]
struct Topic {
    log: Vec<CloudEvent>,
    /// Next offset to hand out, per group.
    cursors: HashMap<String, i64>,
    committed: HashMap<String, i64>,
}

#[derive(Clone, Default)]
pub struct MemoryBus {
    topics: Arc<Mutex<HashMap<String, Topic>>>,
    appended: Arc<Notify>,
}

impl MemoryBus {
    fn with_topic<T>(&self, topic: &str, f: impl FnOnce(&mut Topic) -> T) -> T {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        f(topics.entry(topic.to_owned()).or_default())
    }

    /// Everything published to `topic` so far (for tests and diagnostics).
    pub fn published(&self, topic: &str) -> Vec<CloudEvent> {
        self.with_topic(topic, |t| t.log.clone())
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, topic: &str, event: &CloudEvent) -> Result<(), EventBusError> {
        self.with_topic(topic, |t| t.log.push(event.clone()));
        self.appended.notify_waiters();
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, EventBusError> {
        // A (re)joining group resumes after its last commit: deliveries
        // handed out but never committed are delivered again.
        self.with_topic(topic, |t| {
            let committed = t.committed.get(group).copied().unwrap_or(0);
            t.cursors.insert(group.to_owned(), committed);
        });
        Ok(Box::new(MemorySubscription {
            bus: self.clone(),
            topic: topic.to_owned(),
            group: group.to_owned(),
        }))
    }
}

struct MemorySubscription {
    bus: MemoryBus,
    topic: String,
    group: String,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Delivery, EventBusError> {
        loop {
            // Register interest before looking, so an append in between
            // is not missed.
            let appended = self.bus.appended.notified();
            let next = self.bus.with_topic(&self.topic, |t| {
                let cursor = t.cursors.entry(self.group.clone()).or_insert(0);
                let event = t.log.get(usize::try_from(*cursor).ok()?)?.clone();
                let offset = *cursor;
                *cursor += 1;
                Some((offset, event))
            });
            if let Some((offset, event)) = next {
                return Ok(Delivery {
                    topic: self.topic.clone(),
                    partition: 0,
                    offset,
                    event,
                });
            }
            appended.await;
        }
    }

    async fn commit(&mut self, delivery: &Delivery) -> Result<(), EventBusError> {
        self.bus.with_topic(&self.topic, |t| {
            let committed = t.committed.entry(self.group.clone()).or_insert(0);
            *committed = (*committed).max(delivery.offset + 1);
        });
        Ok(())
    }
}
