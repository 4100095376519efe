//! Kafka through rdkafka (librdkafka).
//!
//! The producer is idempotent (`enable.idempotence`, `acks=all`): retries
//! after a lost acknowledgement never duplicate or reorder a partition.
//! Events travel in CloudEvents *binary content mode*: attributes in
//! `ce_*` headers, the JSON payload as the value, the subject as the key.
//! Consumers never auto-commit; [`Subscription::commit`] is called by the
//! handler once the effect is stored.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::{
    CloudEvent, Delivery, EventBus, EventBusError, KafkaConfig, SPEC_VERSION, Subscription,
};

pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer,
}

/// What producers and consumers share: where the brokers are and how to
/// sign in to them.
#[allow(clippy::disallowed_methods)] // the one place Kafka clients are configured
fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (key, value) in config.security.client_settings() {
        client.set(key, value);
    }
    client
}

/// Errors about the record itself, which no retry can fix.
pub(super) fn is_permanent(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::InvalidMessage
                | Code::InvalidRecord
                | Code::MessageBatchTooLarge
                | Code::InvalidTopic
                | Code::InvalidRequiredAcks
        )
    )
}

fn client_error(error: rdkafka::error::KafkaError) -> EventBusError {
    EventBusError::Client(Box::new(error))
}

impl KafkaBus {
    pub fn new(config: KafkaConfig) -> Result<Self, EventBusError> {
        let producer = client_config(&config)
            .set("client.id", &config.client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                config.message_timeout.as_millis().to_string(),
            )
            // A request in flight to a broker that stopped answering is
            // failed by this, not by the message timeout: without it a
            // publish could outlast `KAFKA_MESSAGE_TIMEOUT` (and the outbox
            // lease sized from it) by librdkafka's 30 s default.
            .set(
                "request.timeout.ms",
                config.message_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(client_error)?;
        Ok(Self { config, producer })
    }
}

fn headers(event: &CloudEvent) -> OwnedHeaders {
    let version = event.aggregate_version.to_string();
    let schema = event.schema_version.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(10)
        .insert(Header {
            key: "ce_specversion",
            value: Some(SPEC_VERSION),
        })
        .insert(Header {
            key: "ce_id",
            value: Some(event.id.as_str()),
        })
        .insert(Header {
            key: "ce_source",
            value: Some(event.source.as_str()),
        })
        .insert(Header {
            key: "ce_type",
            value: Some(event.event_type.as_str()),
        })
        .insert(Header {
            key: "ce_subject",
            value: Some(event.subject.as_str()),
        })
        .insert(Header {
            key: "ce_time",
            value: Some(event.time.as_str()),
        })
        .insert(Header {
            key: "ce_aggregateversion",
            value: Some(version.as_str()),
        })
        .insert(Header {
            key: "ce_schemaversion",
            value: Some(schema.as_str()),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
    if let Some(traceparent) = &event.traceparent {
        headers = headers.insert(Header {
            key: "ce_traceparent",
            value: Some(traceparent.as_str()),
        });
    }
    headers
}

/// Reads a binary-mode CloudEvent back from a Kafka message.
pub(crate) fn decode(message: &BorrowedMessage<'_>) -> Result<CloudEvent, String> {
    let mut attrs = std::collections::HashMap::new();
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            if let Some(value) = header.value {
                let value = std::str::from_utf8(value)
                    .map_err(|_| format!("header {} is not UTF-8", header.key))?;
                attrs.insert(header.key.to_owned(), value.to_owned());
            }
        }
    }
    let required = |key: &str| {
        attrs
            .get(key)
            .cloned()
            .ok_or_else(|| format!("missing header {key}"))
    };
    if required("ce_specversion")? != SPEC_VERSION {
        return Err("unsupported ce_specversion".into());
    }
    Ok(CloudEvent {
        id: required("ce_id")?,
        source: required("ce_source")?,
        event_type: required("ce_type")?,
        subject: attrs.get("ce_subject").cloned().unwrap_or_default(),
        time: attrs.get("ce_time").cloned().unwrap_or_default(),
        aggregate_version: attrs
            .get("ce_aggregateversion")
            .and_then(|v| v.parse().ok())
            .unwrap_or_default(),
        schema_version: attrs
            .get("ce_schemaversion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        traceparent: attrs.get("ce_traceparent").cloned(),
        data: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    })
}

#[async_trait]
impl EventBus for KafkaBus {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, topic: &str, event: &CloudEvent) -> Result<(), EventBusError> {
        let record = FutureRecord::to(topic)
            .key(event.subject.as_bytes())
            .payload(event.data.as_slice())
            .headers(headers(event));
        self.producer
            .send(record, self.config.message_timeout)
            .await
            .map(|_| ())
            .map_err(|(error, _)| EventBusError::Publish {
                topic: topic.to_owned(),
                source: Box::new(error),
            })
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, EventBusError> {
        let consumer: StreamConsumer = client_config(&self.config)
            .set("client.id", &self.config.client_id)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "fetch.wait.max.ms",
                self.config.fetch_wait_max.as_millis().max(1).to_string(),
            )
            .set(
                "session.timeout.ms",
                self.config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.config.session_timeout / 3)
                    .as_millis()
                    .max(1)
                    .to_string(),
            )
            .create()
            .map_err(client_error)?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| EventBusError::Consume {
                topic: topic.to_owned(),
                source: Box::new(e),
            })?;
        Ok(Box::new(KafkaSubscription {
            consumer,
            topic: topic.to_owned(),
        }))
    }
}

struct KafkaSubscription {
    consumer: StreamConsumer,
    topic: String,
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Result<Delivery, EventBusError> {
        let message = loop {
            match self.consumer.recv().await {
                Ok(message) => break message,
                // A consumer may start before anyone has produced to its
                // topic; it appears with the first event, so keep waiting.
                Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
                )) => {
                    tracing::debug!(topic = %self.topic, "topic does not exist yet; waiting");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(EventBusError::Consume {
                        topic: self.topic.clone(),
                        source: Box::new(e),
                    });
                }
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        let event = decode(&message).map_err(|reason| EventBusError::Malformed {
            topic: message.topic().to_owned(),
            partition,
            offset,
            reason,
        })?;
        Ok(Delivery {
            topic: message.topic().to_owned(),
            partition,
            offset,
            event,
        })
    }

    async fn commit(&mut self, delivery: &Delivery) -> Result<(), EventBusError> {
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                &delivery.topic,
                delivery.partition,
                Offset::Offset(delivery.offset + 1),
            )
            .map_err(|e| EventBusError::Consume {
                topic: self.topic.clone(),
                source: Box::new(e),
            })?;
        self.consumer
            .commit(&offsets, CommitMode::Async)
            .map_err(|e| EventBusError::Consume {
                topic: self.topic.clone(),
                source: Box::new(e),
            })
    }
}
