//! Domain events on `chat.events`: `MessagePosted` for every message and
//! `UserMentioned` per `@name` in it, for the notifications service.
//! Published off the connection's path, through one bounded queue per
//! process drained by one task: a slow or absent broker never delays a chat
//! message nor piles up tasks; when the queue is full the event is shed and
//! counted (`chat_events_shed_total`), and a failure is logged and counted.

use std::sync::Arc;

use common::events::{CloudEvent, EventBus};
use serde_json::json;

use crate::protocol::ChatMessage;

pub const TOPIC: &str = "chat.events";
pub const SOURCE: &str = "/chat";

fn event(event_type: &str, message: &ChatMessage, data: serde_json::Value) -> CloudEvent {
    CloudEvent {
        id: uuid::Uuid::now_v7().to_string(),
        source: SOURCE.to_owned(),
        event_type: event_type.to_owned(),
        subject: message.room.clone(),
        time: humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(message.sent_at),
        )
        .to_string(),
        aggregate_version: message.offset,
        schema_version: 1,
        traceparent: common::telemetry::propagation::current_traceparent(),
        data: data.to_string().into_bytes(),
    }
}

/// The events one message causes.
pub fn for_message(message: &ChatMessage) -> Vec<CloudEvent> {
    let mut events = vec![event(
        "MessagePosted",
        message,
        json!({
            "room": message.room,
            "message_id": message.id,
            "offset": message.offset,
            "epoch": message.epoch,
            "user_id": message.user.id,
            "username": message.user.name,
            "content": message.content,
            "mentions": message.mentions,
            "sent_at": message.sent_at,
        }),
    )];
    for name in &message.mentions {
        events.push(event(
            "UserMentioned",
            message,
            json!({
                "room": message.room,
                "message_id": message.id,
                "mentioned_username": name,
                "by_user_id": message.user.id,
                "by_username": message.user.name,
                "excerpt": message.content.chars().take(140).collect::<String>(),
            }),
        ));
    }
    events
}

/// Publishes awaiting the bus's acknowledgement at once: a delivery round
/// trip each would cap the rate at one event per round trip.
const IN_FLIGHT: usize = 64;

/// The process's queue of events waiting for the bus.
#[derive(Clone)]
pub struct Publisher {
    queue: tokio::sync::mpsc::Sender<CloudEvent>,
}

impl Publisher {
    /// A queue of `capacity` events and the task that publishes them, up to
    /// [`IN_FLIGHT`] at once (each handed to the bus in queue order, so a
    /// room's events keep their order on its partition); the task ends once
    /// every publisher is dropped and the queue is empty.
    pub fn start(bus: Arc<dyn EventBus>, capacity: usize) -> Self {
        use futures_util::StreamExt as _;
        let (queue, mut events) = tokio::sync::mpsc::channel::<CloudEvent>(capacity.max(1));
        let incoming = futures_util::stream::poll_fn(move |cx| events.poll_recv(cx));
        tokio::spawn(incoming.for_each_concurrent(IN_FLIGHT, move |event| {
            let bus = bus.clone();
            async move {
                if let Err(e) = bus.publish(TOPIC, &event).await {
                    metrics::counter!("chat_event_publish_failures_total").increment(1);
                    tracing::warn!(error = %common::exit::chain(&e), event_type = event.event_type, "chat event not published");
                }
            }
        }));
        Self { queue }
    }

    /// Queues the events of `message`; what does not fit is shed.
    pub fn posted(&self, message: &ChatMessage) {
        for event in for_message(message) {
            if self.queue.try_send(event).is_err() {
                metrics::counter!("chat_events_shed_total").increment(1);
                tracing::debug!("chat event queue full; event shed");
            }
        }
    }
}
