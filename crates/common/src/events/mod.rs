//! Domain events between services: CloudEvents over Kafka, or in process.
//!
//! [`CloudEvent`] is the envelope (CloudEvents 1.0: id, source, type,
//! subject = aggregate id, time, plus the aggregate version, schema version
//! and W3C `traceparent` as extension attributes; the payload is JSON).
//! [`EventBus`] publishes and subscribes with consumer groups; its backends
//! are [`KafkaBus`] (rdkafka: idempotent producer, binary content mode with
//! `ce_*` headers, key = subject so one aggregate's events stay in order)
//! and [`MemoryBus`] for the embedded mode. `KAFKA_BROKERS` picks one.
//!
//! Delivery is at least once: a consumer commits a delivery only after its
//! effect is stored, and must ignore an event id it has already applied.

#[cfg(feature = "kafka")]
mod kafka;
mod memory;

use std::sync::Arc;

use async_trait::async_trait;

#[cfg(feature = "kafka")]
pub use kafka::KafkaBus;
pub use memory::MemoryBus;

use crate::config::{ConfigError, Env};

pub const SPEC_VERSION: &str = "1.0";

/// One CloudEvents 1.0 event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudEvent {
    /// Unique per event; consumers deduplicate on it.
    pub id: String,
    /// Producing service, as a URI reference (`/users`).
    pub source: String,
    /// Event type (`UserCreated`).
    pub event_type: String,
    /// Aggregate id; also the Kafka key.
    pub subject: String,
    /// RFC 3339 time of the change.
    pub time: String,
    /// Extension `aggregateversion`.
    pub aggregate_version: u64,
    /// Extension `schemaversion`.
    pub schema_version: u32,
    /// Extension `traceparent` (CloudEvents distributed tracing).
    pub traceparent: Option<String>,
    /// JSON payload.
    pub data: Vec<u8>,
}

/// A received event and where it came from, for committing.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub event: CloudEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum EventBusError {
    #[error("cannot publish to {topic}")]
    Publish {
        topic: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot consume from {topic}")]
    Consume {
        topic: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("message at {topic}/{partition}@{offset} is not a CloudEvent: {reason}")]
    Malformed {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("the event bus client could not be created")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Short name for logs and metrics (`kafka`, `memory`).
    fn backend(&self) -> &'static str;

    /// Returns once the bus has durably accepted the event.
    async fn publish(&self, topic: &str, event: &CloudEvent) -> Result<(), EventBusError>;

    /// Joins consumer group `group` on `topic`, resuming after the group's
    /// last committed offset (or from the start for a new group).
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, EventBusError>;
}

#[async_trait]
pub trait Subscription: Send {
    /// The next event; waits for one.
    async fn next(&mut self) -> Result<Delivery, EventBusError>;

    /// Records that `delivery` (and everything before it on its partition)
    /// has been handled.
    async fn commit(&mut self, delivery: &Delivery) -> Result<(), EventBusError>;
}

/// Where the Kafka brokers are and how patient to be with them.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    pub client_id: String,
    /// How long a publish may wait for the brokers before failing.
    pub message_timeout: std::time::Duration,
    /// A consumer silent for this long is dropped from its group and its
    /// partitions reassigned. Kafka's default is 45 s; shorter means a
    /// crashed replica's partitions move sooner.
    pub session_timeout: std::time::Duration,
}

/// Which bus to use, from `KAFKA_BROKERS` (shared).
#[derive(Clone, Debug)]
pub enum EventBusConfig {
    Memory,
    #[cfg(feature = "kafka")]
    Kafka(KafkaConfig),
}

impl EventBusConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let brokers: String = env.shared("KAFKA_BROKERS", String::new())?;
        if brokers.trim().is_empty() {
            return Ok(Self::Memory);
        }
        #[cfg(not(feature = "kafka"))]
        return Err(ConfigError::Invalid {
            var: env.var_name("KAFKA_BROKERS"),
            value: brokers,
            reason: "this binary is built without Kafka (the common crate's `kafka` feature)"
                .into(),
        });
        #[cfg(feature = "kafka")]
        Ok(Self::Kafka(KafkaConfig {
            brokers,
            client_id: env.prefix().to_ascii_lowercase(),
            message_timeout: env
                .shared("KAFKA_MESSAGE_TIMEOUT", std::time::Duration::from_secs(30))?,
            session_timeout: env
                .shared("KAFKA_SESSION_TIMEOUT", std::time::Duration::from_secs(10))?,
        }))
    }

    pub fn connect(&self) -> Result<Arc<dyn EventBus>, EventBusError> {
        Ok(match self {
            Self::Memory => Arc::new(MemoryBus::default()),
            #[cfg(feature = "kafka")]
            Self::Kafka(config) => Arc::new(KafkaBus::new(config.clone())?),
        })
    }
}
