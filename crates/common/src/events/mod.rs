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

use crate::config::{ConfigError, Env, Secret};

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
    /// The bus will never take this event (see [`EventBusError::is_permanent`]).
    #[error("{topic} refuses this event: {reason}")]
    Rejected { topic: String, reason: String },
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

impl EventBusError {
    /// The bus refused this event for good (too large, malformed, not
    /// allowed on the topic): sending it again cannot succeed. Timeouts
    /// and unreachable brokers are not permanent: they say nothing about
    /// the event.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Rejected { .. } => true,
            #[cfg(feature = "kafka")]
            Self::Publish { source, .. } => source
                .downcast_ref::<rdkafka::error::KafkaError>()
                .is_some_and(kafka::is_permanent),
            _ => false,
        }
    }
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

/// Subscribes `group` to `topic`, asking again every second while the bus
/// refuses (Kafka not up yet); `None` if `stop` fires first.
pub async fn subscribe_until_stopped(
    bus: &dyn EventBus,
    topic: &str,
    group: &str,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<Box<dyn Subscription>> {
    loop {
        match bus.subscribe(topic, group).await {
            Ok(subscription) => return Some(subscription),
            Err(error) => {
                tracing::warn!(error = %crate::exit::chain(&error), "cannot subscribe to {topic} yet");
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
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
    /// The longest a broker may hold a consumer's fetch while it has no
    /// new data (librdkafka's `fetch.wait.max.ms`). A real broker answers
    /// as soon as data arrives; librdkafka's mock cluster answers an empty
    /// fetch only when this runs out, so it bounds the latency there.
    pub fetch_wait_max: std::time::Duration,
    /// How clients prove who they are to the brokers.
    pub security: KafkaSecurity,
}

/// `KAFKA_SECURITY_PROTOCOL` and the SASL credentials: what a managed Kafka
/// (or one with ACLs) asks of its clients. The password is a [`Secret`],
/// so no config dump or log line shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    /// librdkafka's `security.protocol`: `plaintext`, `sasl_plaintext`,
    /// `ssl` or `sasl_ssl`; `None` means `plaintext`, or `sasl_plaintext`
    /// when credentials are given.
    pub protocol: Option<String>,
    pub sasl: Option<KafkaSasl>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    pub password: Secret,
}

const KAFKA_PROTOCOLS: &[&str] = &["plaintext", "sasl_plaintext", "ssl", "sasl_ssl"];
const KAFKA_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl KafkaSecurity {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let invalid = |key: &str, value: String, reason: String| ConfigError::Invalid {
            var: env.var_name(key),
            value,
            reason,
        };
        let protocol: Option<String> = env
            .shared_optional::<String>("KAFKA_SECURITY_PROTOCOL")?
            .map(|p| p.to_ascii_lowercase());
        if let Some(p) = &protocol
            && !KAFKA_PROTOCOLS.contains(&p.as_str())
        {
            return Err(invalid(
                "KAFKA_SECURITY_PROTOCOL",
                p.clone(),
                format!("one of {}", KAFKA_PROTOCOLS.join(", ")),
            ));
        }
        let username: Option<String> = env.shared_optional("KAFKA_SASL_USERNAME")?;
        let password: Option<Secret> = env.shared_optional("KAFKA_SASL_PASSWORD")?;
        let sasl = match (username, password) {
            (None, None) => None,
            (Some(username), Some(password)) => {
                let mechanism = env
                    .shared("KAFKA_SASL_MECHANISM", "PLAIN".to_owned())?
                    .to_ascii_uppercase();
                if !KAFKA_MECHANISMS.contains(&mechanism.as_str()) {
                    return Err(invalid(
                        "KAFKA_SASL_MECHANISM",
                        mechanism,
                        format!("one of {}", KAFKA_MECHANISMS.join(", ")),
                    ));
                }
                Some(KafkaSasl {
                    mechanism,
                    username,
                    password,
                })
            }
            (Some(_), None) => {
                return Err(invalid(
                    "KAFKA_SASL_PASSWORD",
                    String::new(),
                    "required with KAFKA_SASL_USERNAME".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "KAFKA_SASL_USERNAME",
                    String::new(),
                    "required with KAFKA_SASL_PASSWORD".into(),
                ));
            }
        };
        if sasl.is_some() && matches!(protocol.as_deref(), Some("plaintext" | "ssl")) {
            return Err(invalid(
                "KAFKA_SECURITY_PROTOCOL",
                protocol.unwrap_or_default(),
                "SASL credentials need sasl_plaintext or sasl_ssl".into(),
            ));
        }
        Ok(Self { protocol, sasl })
    }

    /// The librdkafka settings, as `(key, value)` pairs.
    pub fn client_settings(&self) -> Vec<(&'static str, String)> {
        let protocol = match (&self.protocol, &self.sasl) {
            (Some(p), _) => p.clone(),
            (None, Some(_)) => "sasl_plaintext".to_owned(),
            (None, None) => "plaintext".to_owned(),
        };
        let mut settings = vec![("security.protocol", protocol)];
        if let Some(sasl) = &self.sasl {
            settings.extend([
                ("sasl.mechanisms", sasl.mechanism.clone()),
                ("sasl.username", sasl.username.clone()),
                ("sasl.password", sasl.password.expose().to_owned()),
            ]);
        }
        settings
    }
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
            fetch_wait_max: env.shared(
                "KAFKA_FETCH_WAIT_MAX",
                std::time::Duration::from_millis(500),
            )?,
            security: KafkaSecurity::from_env(env)?,
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

#[cfg(test)]
mod security_tests {
    use super::*;

    fn security(vars: &[(&str, &str)]) -> Result<KafkaSecurity, ConfigError> {
        KafkaSecurity::from_env(&Env::from_map("USERS", vars.iter().copied()))
    }

    #[test]
    fn without_settings_clients_speak_plaintext() {
        let none = security(&[]).unwrap();
        assert_eq!(
            none.client_settings(),
            [("security.protocol", "plaintext".to_owned())]
        );
    }

    #[test]
    fn sasl_credentials_reach_the_client_and_never_its_debug_form() {
        let sasl = security(&[
            ("PLATFORM_KAFKA_SASL_USERNAME", "svc-users"),
            ("USERS_KAFKA_SASL_PASSWORD", "hunter2-kafka"),
            ("PLATFORM_KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("PLATFORM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ])
        .unwrap();
        let settings = sasl.client_settings();
        for expected in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "svc-users"),
            ("sasl.password", "hunter2-kafka"),
        ] {
            assert!(
                settings.iter().any(|(k, v)| (*k, v.as_str()) == expected),
                "{expected:?}"
            );
        }
        assert!(!format!("{sasl:?}").contains("hunter2"), "{sasl:?}");
        // Credentials alone mean SASL over plaintext, with PLAIN.
        let plain = security(&[
            ("PLATFORM_KAFKA_SASL_USERNAME", "u"),
            ("PLATFORM_KAFKA_SASL_PASSWORD", "p"),
        ])
        .unwrap();
        assert!(
            plain
                .client_settings()
                .contains(&("security.protocol", "sasl_plaintext".to_owned()))
        );
        assert!(
            plain
                .client_settings()
                .contains(&("sasl.mechanisms", "PLAIN".to_owned()))
        );
    }

    #[test]
    fn half_or_contradictory_settings_are_refused_naming_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("PLATFORM_KAFKA_SASL_USERNAME", "u")],
                "KAFKA_SASL_PASSWORD",
            ),
            (
                &[("PLATFORM_KAFKA_SASL_PASSWORD", "p")],
                "KAFKA_SASL_USERNAME",
            ),
            (
                &[("PLATFORM_KAFKA_SECURITY_PROTOCOL", "tls")],
                "KAFKA_SECURITY_PROTOCOL",
            ),
            (
                &[
                    ("PLATFORM_KAFKA_SASL_USERNAME", "u"),
                    ("PLATFORM_KAFKA_SASL_PASSWORD", "p"),
                    ("PLATFORM_KAFKA_SASL_MECHANISM", "GSSAPI"),
                ],
                "KAFKA_SASL_MECHANISM",
            ),
            (
                &[
                    ("PLATFORM_KAFKA_SASL_USERNAME", "u"),
                    ("PLATFORM_KAFKA_SASL_PASSWORD", "secret-p"),
                    ("PLATFORM_KAFKA_SECURITY_PROTOCOL", "plaintext"),
                ],
                "KAFKA_SECURITY_PROTOCOL",
            ),
        ];
        for (vars, named) in cases {
            let error = security(vars).unwrap_err().to_string();
            assert!(error.contains(named), "{vars:?}: {error}");
            assert!(!error.contains("secret-p"), "{error}");
        }
    }
}
