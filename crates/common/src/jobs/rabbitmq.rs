//! Jobs on RabbitMQ through lapin: durable quorum queues, persistent
//! messages, publisher confirms, manual acks and a prefetch bound.
//!
//! Topology, under a prefix (`jobs` by default), declared by whoever first
//! needs it (declaring is idempotent):
//! - `<prefix>` (direct exchange) routes a job message by its kind to the
//!   quorum queue `<prefix>.<kind>`, which dead-letters rejected messages
//!   to `<prefix>.dead` → `<prefix>.<kind>.dead`;
//! - delays (retries, scheduled jobs) go through fanout exchanges
//!   `<prefix>.delay.<ms>` into quorum queues of one fixed message TTL each
//!   (10 ms · 2ⁿ), which dead-letter, at least once, back to `<prefix>`
//!   with the message's kind as routing key. One TTL per queue keeps every
//!   queue first-in first-out expiring (a per-message TTL only expires at
//!   the head); a long delay takes the largest step that fits and is
//!   published onward on arrival until it is due.
//!
//! lapin does not reconnect on its own: a broken connection is dropped
//! and the next publish or consumer opens a new one, with backoff.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};

use super::model::JobError;
use super::transport::{Acker, Deliveries, Delivery, JobMessage, MessageQueue};

/// The shortest delay step; shorter delays take it (a little late rather
/// than early).
const STEP_MS: u64 = 10;
/// Steps up to 10 ms · 2²⁷ ≈ 15 days; longer delays hop.
const STEPS: u32 = 28;

#[derive(Clone, Debug)]
pub struct RabbitMqConfig {
    /// `amqp://user:password@host:port/vhost`.
    pub url: crate::config::SecretUrl,
    /// Names every exchange and queue.
    pub prefix: String,
    pub connect_timeout: Duration,
    /// Queues unused this long are deleted by the broker (`x-expires`):
    /// for throwaway topologies such as tests', never for real ones (an
    /// idle delay queue would go with its messages).
    pub queue_expiry: Option<Duration>,
    /// How long a dead job's message stays in its dead-letter queue.
    pub dead_letter_ttl: Duration,
}

impl RabbitMqConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: crate::config::SecretUrl::new(url),
            prefix: "jobs".into(),
            connect_timeout: Duration::from_secs(3),
            queue_expiry: None,
            dead_letter_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The RabbitMQ message queue.
#[derive(Clone)]
pub struct RabbitMqQueue {
    inner: Arc<Inner>,
}

struct Inner {
    config: RabbitMqConfig,
    link: tokio::sync::Mutex<Option<Link>>,
    /// Names declared on the current link (cleared with it).
    declared: Mutex<HashSet<String>>,
}

/// The current connection and its confirm-mode publishing channel.
struct Link {
    connection: Arc<Connection>,
    publisher: Channel,
}

async fn confirm_channel(connection: &Connection) -> Result<Channel, JobError> {
    let channel = connection.create_channel().await.map_err(unavailable)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(unavailable)?;
    Ok(channel)
}

fn unavailable(error: impl std::fmt::Display) -> JobError {
    JobError::Unavailable(error.to_string())
}

fn table(expiry: Option<Duration>, entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    if let Some(expiry) = expiry {
        let ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX);
        table.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
    }
    for (key, value) in entries {
        table.insert((*key).into(), value.clone());
    }
    table
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

/// The delay step for `delay`: the largest that does not overshoot, or
/// the shortest.
fn step_for(delay: Duration) -> u64 {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    let mut step = STEP_MS;
    for n in 1..STEPS {
        let next = STEP_MS << n;
        if next > ms {
            break;
        }
        step = next;
    }
    step
}

impl RabbitMqQueue {
    /// Does not connect yet: the first publish or consumer does, and every
    /// one after a connection broke.
    pub fn new(config: RabbitMqConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                link: tokio::sync::Mutex::new(None),
                declared: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Connects now; for a start that should fail on a wrong URL.
    pub async fn connect(&self) -> Result<(), JobError> {
        self.inner.link().await.map(|_| ())
    }
}

impl Inner {
    /// `<prefix>.q.<kind>`: kinds may hold dots, so each name family has
    /// a segment of its own (`q`, `dlq`, `delay`) and no kind's queue can
    /// be another's dead-letter queue or a delay step.
    fn work_queue(&self, kind: &str) -> String {
        format!("{}.q.{kind}", self.config.prefix)
    }

    /// A live connection and publishing channel, opening them if needed.
    async fn link(&self) -> Result<(Arc<Connection>, Channel), JobError> {
        let mut link = self.link.lock().await;
        let bound = self.config.connect_timeout;
        if let Some(current) = link.as_mut()
            && current.connection.status().connected()
        {
            if !current.publisher.status().connected() {
                // Only the channel closed (a refused declare, say): a new
                // one on the same connection, which consumers keep using.
                // If even that fails, the connection is gone whatever its
                // status says.
                match tokio::time::timeout(bound, confirm_channel(&current.connection)).await {
                    Ok(Ok(channel)) => current.publisher = channel,
                    Ok(Err(error)) => {
                        *link = None;
                        return Err(error);
                    }
                    Err(_) => {
                        *link = None;
                        return Err(unavailable("RabbitMQ did not open a channel in time"));
                    }
                }
            }
            return Ok((current.connection.clone(), current.publisher.clone()));
        }
        *link = None;
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let open = async {
            let connection =
                Connection::connect(self.config.url.expose(), ConnectionProperties::default())
                    .await
                    .map_err(unavailable)?;
            let connection = Arc::new(connection);
            let publisher = confirm_channel(&connection).await?;
            Ok::<_, JobError>((connection, publisher))
        };
        let (connection, publisher) = tokio::time::timeout(bound, open)
            .await
            .map_err(|_| unavailable("RabbitMQ did not answer in time"))??;
        *link = Some(Link {
            connection: connection.clone(),
            publisher: publisher.clone(),
        });
        metrics::counter!("jobs_broker_connections_total").increment(1);
        Ok((connection, publisher))
    }

    /// After `error` on `connection`: forgets the link if that connection
    /// is the current one and is gone, so the next call reconnects. A
    /// channel-level error leaves the connection (and every other consumer
    /// on it) alone; a newer link is never touched.
    async fn broken(&self, connection: &Arc<Connection>, error: &lapin::Error) {
        let gone = !connection.status().connected()
            || matches!(
                error.kind(),
                lapin::ErrorKind::IOError(_) | lapin::ErrorKind::InvalidConnectionState(_)
            );
        if gone {
            tracing::warn!(%error, "RabbitMQ connection lost; reconnecting");
            self.forget(connection).await;
        }
    }

    /// Drops `connection` if it is still the current link's.
    async fn forget(&self, connection: &Arc<Connection>) {
        let mut link = self.link.lock().await;
        if let Some(current) = link.as_ref()
            && Arc::ptr_eq(&current.connection, connection)
        {
            *link = None;
        }
    }

    fn first_time(&self, name: &str) -> bool {
        !self
            .declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    fn mark_declared(&self, name: String) {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
    }

    /// The kind's work queue and dead-letter queue, bound.
    async fn declare_kind(&self, channel: &Channel, kind: &str) -> Result<(), lapin::Error> {
        let queue = self.work_queue(kind);
        if !self.first_time(&queue) {
            return Ok(());
        }
        let prefix = &self.config.prefix;
        let dead_exchange = format!("{prefix}.dead");
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                prefix.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                dead_exchange.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        let quorum = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let dead_queue = format!("{prefix}.dlq.{kind}");
        let kept = i64::try_from(self.config.dead_letter_ttl.as_millis()).unwrap_or(i64::MAX);
        channel
            .queue_declare(
                dead_queue.as_str().into(),
                quorum,
                // The store keeps the dead job; this copy is for tools, and
                // goes after a while rather than piling up.
                table(
                    self.config.queue_expiry,
                    &[
                        ("x-queue-type", text("quorum")),
                        ("x-message-ttl", AMQPValue::LongLongInt(kept)),
                    ],
                ),
            )
            .await?;
        channel
            .queue_bind(
                dead_queue.as_str().into(),
                dead_exchange.as_str().into(),
                kind.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                queue.as_str().into(),
                quorum,
                table(
                    self.config.queue_expiry,
                    &[
                        ("x-queue-type", text("quorum")),
                        ("x-dead-letter-exchange", text(&dead_exchange)),
                    ],
                ),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                prefix.as_str().into(),
                kind.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.mark_declared(queue);
        Ok(())
    }

    /// The delay step's exchange and queue; its exchange name.
    async fn declare_step(&self, channel: &Channel, step_ms: u64) -> Result<String, lapin::Error> {
        let prefix = &self.config.prefix;
        let name = format!("{prefix}.delay.{step_ms}");
        if !self.first_time(&name) {
            return Ok(name);
        }
        channel
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                table(
                    self.config.queue_expiry,
                    &[
                        ("x-queue-type", text("quorum")),
                        (
                            "x-message-ttl",
                            AMQPValue::LongLongInt(i64::try_from(step_ms).unwrap_or(i64::MAX)),
                        ),
                        ("x-dead-letter-exchange", text(prefix)),
                        // Moved on only once the work queue has it.
                        ("x-dead-letter-strategy", text("at-least-once")),
                        ("x-overflow", text("reject-publish")),
                    ],
                ),
            )
            .await?;
        channel
            .queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.mark_declared(name.clone());
        Ok(name)
    }

    async fn publish_on(
        &self,
        channel: &Channel,
        message: &JobMessage,
        delay: Duration,
    ) -> Result<(), PublishError> {
        self.declare_kind(channel, &message.kind).await?;
        let exchange = if delay.is_zero() {
            self.config.prefix.clone()
        } else {
            self.declare_step(channel, step_for(delay)).await?
        };
        let body = serde_json::to_vec(message).map_err(|e| PublishError::Refused(e.to_string()))?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message.id.to_string().as_str().into());
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                message.kind.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Refused("unroutable".into())),
            Confirmation::Nack(_) => Err(PublishError::Refused("nacked by the broker".into())),
            Confirmation::NotRequested => Err(PublishError::Refused("not confirmed".into())),
        }
    }
}

enum PublishError {
    Broker(lapin::Error),
    Refused(String),
}

impl From<lapin::Error> for PublishError {
    fn from(error: lapin::Error) -> Self {
        Self::Broker(error)
    }
}

#[async_trait]
impl MessageQueue for RabbitMqQueue {
    fn backend(&self) -> &'static str {
        "rabbitmq"
    }

    /// Tries until the broker confirms: the caller bounds the wait (the
    /// queue's publish timeout), so an outage makes an enqueue wait, then
    /// fail, never vanish.
    async fn publish(&self, message: &JobMessage, delay: Duration) -> Result<(), JobError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.inner.link().await {
                Ok((connection, channel)) => {
                    match self.inner.publish_on(&channel, message, delay).await {
                        Ok(()) => return Ok(()),
                        // A nack or an unroutable message: tried again,
                        // on the same link, until the caller gives up.
                        Err(PublishError::Refused(reason)) => {
                            tracing::warn!(reason, "RabbitMQ refused a job message");
                        }
                        Err(PublishError::Broker(error)) => {
                            self.inner.broken(&connection, &error).await;
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "RabbitMQ unavailable; trying again"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    async fn consume(&self, kind: &str, prefetch: usize) -> Result<Box<dyn Deliveries>, JobError> {
        Ok(Box::new(RabbitDeliveries {
            inner: self.inner.clone(),
            kind: kind.to_owned(),
            prefetch: u16::try_from(prefetch.max(1)).unwrap_or(u16::MAX),
            consumer: None,
        }))
    }

    async fn depth(&self, kind: &str) -> Result<u64, JobError> {
        let (connection, _) = self.inner.link().await?;
        // Its own channel: a passive declare of a missing queue closes it.
        let channel = connection.create_channel().await.map_err(unavailable)?;
        let queue = channel
            .queue_declare(
                self.inner.work_queue(kind).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "done".into()).await;
        match queue {
            Ok(queue) => Ok(u64::from(queue.message_count())),
            Err(_) => Ok(0),
        }
    }
}

/// A consumer that opens itself again whenever its channel breaks.
struct RabbitDeliveries {
    inner: Arc<Inner>,
    kind: String,
    prefetch: u16,
    consumer: Option<Consuming>,
}

struct Consuming {
    /// Kept so the connection lives as long as its consumer does.
    connection: Arc<Connection>,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl RabbitDeliveries {
    async fn open(&self) -> Result<Consuming, String> {
        let (connection, _) = self.inner.link().await.map_err(|e| e.to_string())?;
        let opened = async {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            self.inner.declare_kind(&channel, &self.kind).await?;
            let consumer = channel
                .basic_consume(
                    self.inner.work_queue(&self.kind).as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, consumer))
        };
        match tokio::time::timeout(self.inner.config.connect_timeout, opened).await {
            Ok(Ok((channel, consumer))) => Ok(Consuming {
                connection,
                channel,
                consumer,
            }),
            Ok(Err(error)) => {
                self.inner.broken(&connection, &error).await;
                Err(error.to_string())
            }
            // A connection that cannot open a consumer in time is taken
            // for gone, whatever its status says (a broker that stopped
            // without closing it).
            Err(_) => {
                self.inner.forget(&connection).await;
                Err("RabbitMQ did not open a consumer in time".into())
            }
        }
    }
}

#[async_trait]
impl Deliveries for RabbitDeliveries {
    async fn next(&mut self) -> Option<Delivery> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(consuming) = self.consumer.as_mut() else {
                match self.open().await {
                    Ok(opened) => {
                        self.consumer = Some(opened);
                        backoff = Duration::from_millis(100);
                    }
                    Err(error) => {
                        tracing::warn!(%error, kind = self.kind, "cannot consume; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
                continue;
            };
            match consuming.consumer.next().await {
                Some(Ok(delivery)) => {
                    let message = serde_json::from_slice::<JobMessage>(&delivery.data)
                        .map_err(|e| format!("not a job message: {e}"))
                        .and_then(|m| {
                            if m.kind == self.kind {
                                Ok(m)
                            } else {
                                Err(format!("a {:?} job in the {:?} queue", m.kind, self.kind))
                            }
                        });
                    return Some(Delivery {
                        message,
                        redelivered: delivery.redelivered,
                        acker: Box::new(RabbitAcker(Some(delivery.acker))),
                    });
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, kind = self.kind, "consumer broken; reopening");
                    if let Some(gone) = self.consumer.take() {
                        self.inner.broken(&gone.connection, &error).await;
                    }
                }
                None => {
                    tracing::warn!(kind = self.kind, "consumer cancelled; reopening");
                    self.consumer = None;
                }
            }
        }
    }

    /// Cancels the consumer; its channel stays open (until this is
    /// dropped) for the deliveries in hand to be settled on.
    async fn stop(&mut self) {
        if let Some(consuming) = self.consumer.as_ref() {
            let tag = consuming.consumer.tag();
            if let Err(error) = consuming
                .channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await
            {
                tracing::debug!(%error, kind = self.kind, "could not cancel a consumer");
            }
        }
    }
}

/// lapin answers `Ok(false)` when the delivery's channel is gone (the
/// broker requeues it then): not settled.
fn settled(result: Result<bool, lapin::Error>) -> Result<(), JobError> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(unavailable("the delivery's channel is gone")),
        Err(error) => Err(unavailable(error)),
    }
}

/// Settles a delivery on the channel it came on; dropped unsettled, it is
/// requeued.
struct RabbitAcker(Option<lapin::Acker>);

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), JobError> {
        match self.0.take() {
            Some(acker) => settled(acker.ack(BasicAckOptions::default()).await),
            None => Ok(()),
        }
    }

    async fn requeue(mut self: Box<Self>) -> Result<(), JobError> {
        match self.0.take() {
            Some(acker) => settled(
                acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await,
            ),
            None => Ok(()),
        }
    }

    async fn reject(mut self: Box<Self>) -> Result<(), JobError> {
        match self.0.take() {
            Some(acker) => settled(acker.reject(BasicRejectOptions { requeue: false }).await),
            None => Ok(()),
        }
    }
}

impl Drop for RabbitAcker {
    fn drop(&mut self) {
        if let Some(acker) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_takes_the_longest_step_that_does_not_overshoot() {
        assert_eq!(step_for(Duration::from_millis(1)), 10);
        assert_eq!(step_for(Duration::from_millis(10)), 10);
        assert_eq!(step_for(Duration::from_millis(399)), 320);
        assert_eq!(step_for(Duration::from_millis(640)), 640);
        assert_eq!(
            step_for(Duration::from_secs(86_400 * 365)),
            STEP_MS << (STEPS - 1)
        );
    }
}
