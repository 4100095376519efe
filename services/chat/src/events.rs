//! Domain events on `chat.events`: `MessagePosted` for every message and
//! `UserMentioned` per `@name` in it, for the notifications service.
//! Published off the connection's path: a slow or absent broker never
//! delays a chat message, and a failure is logged and counted.

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

pub fn posted(bus: Arc<dyn EventBus>, message: &ChatMessage) {
    let events = for_message(message);
    tokio::spawn(async move {
        for event in events {
            if let Err(e) = bus.publish(TOPIC, &event).await {
                metrics::counter!("chat_event_publish_failures_total").increment(1);
                tracing::warn!(error = %common::exit::chain(&e), event_type = event.event_type, "chat event not published");
            }
        }
    });
}
