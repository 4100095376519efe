//! Rooms shared by every replica through Redis.
//!
//! A room's history is a stream whose entry ids are its offsets (`0-<n>`),
//! capped at the history size, beside a hash holding the epoch and the top
//! offset; both expire together after the history TTL. Publishing is one
//! script, so the offset, the stream entry and the pub/sub message that
//! carries it to every replica happen in one step and replicas see a room's
//! messages in offset order. A replica subscribes to a room's channel only
//! while it has members in it. Presence is a sorted set per room whose
//! scores are expiry times, refreshed by every replica for its own members,
//! so a replica that dies leaves no ghosts behind for longer than the
//! presence TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use common::redis::RedisConnectError;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use serde::{Deserialize, Serialize};

use super::redis_scripts::{ABSENT, BROADCAST, COUNT, MEMBERS, PRESENT, PUBLISH, READ};
use super::{
    Broker, BrokerError, Draft, HistoryLimits, Recovery, RoomAccess, new_epoch, now_ms,
    recover_from,
};
use crate::hub::{Frame, Hub};
use crate::protocol::{ChatMessage, Member, Position, ServerFrame};

/// A message as kept in the stream; room, offset and epoch are where it is.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    user: Member,
    content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mentions: Vec<String>,
    sent_at: u64,
}

impl Stored {
    fn into_message(self, room: &str, offset: u64, epoch: &str) -> ChatMessage {
        ChatMessage {
            room: room.to_owned(),
            id: self.id,
            offset,
            epoch: epoch.to_owned(),
            user: self.user,
            content: self.content,
            mentions: self.mentions,
            sent_at: self.sent_at,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RedisBrokerConfig {
    pub url: String,
    /// Prepended to every key and channel, so several platforms can share
    /// one Redis.
    pub prefix: String,
    pub history: HistoryLimits,
    /// How long a replica's members stay listed without a refresh (a replica
    /// that dies stops refreshing).
    pub presence_ttl: Duration,
    pub redis: common::redis::RedisOptions,
}

pub struct RedisBroker {
    client: Client,
    subscriber: SubscriberClient,
    hub: Arc<Hub>,
    config: RedisBrokerConfig,
    /// Identifies this replica's entries in presence sets.
    replica: String,
    /// Per room: whether this replica is subscribed. Changes to one room's
    /// subscription are serialised so a leave racing a join cannot leave a
    /// room with local members unsubscribed.
    subscriptions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>,
    scripts: Scripts,
}

struct Scripts {
    publish: Script,
    read: Script,
    present: Script,
    absent: Script,
    members: Script,
    count: Script,
    broadcast: Script,
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> BrokerError {
    BrokerError::Unavailable(Box::new(e))
}

fn malformed(what: String) -> BrokerError {
    BrokerError::Unavailable(what.into())
}

impl RedisBroker {
    /// Connects, starts following the rooms this replica subscribes to and
    /// refreshing its members' presence.
    pub async fn connect(
        config: RedisBrokerConfig,
        hub: Arc<Hub>,
    ) -> Result<Arc<Self>, RedisConnectError> {
        // A burst for a busy room must not overflow the hand-over from the
        // connection to the fan-out task (fred's default is 32).
        let (client, subscriber) = common::redis::connect(
            &config.url,
            &common::redis::RedisOptions {
                pubsub_buffer: Some(16 * 1024),
                ..config.redis
            },
        )
        .await?;
        let broker = Arc::new(Self {
            client,
            subscriber,
            hub,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            subscriptions: Mutex::new(HashMap::new()),
            scripts: Scripts {
                publish: Script::from_lua(PUBLISH),
                read: Script::from_lua(READ),
                present: Script::from_lua(PRESENT),
                absent: Script::from_lua(ABSENT),
                members: Script::from_lua(MEMBERS),
                count: Script::from_lua(COUNT),
                broadcast: Script::from_lua(BROADCAST),
            },
            config,
        });
        broker.follow();
        broker.refresh_presence();
        Ok(broker)
    }

    fn key(&self, room: &str, what: &str) -> String {
        // The braces keep a room's keys in one cluster slot.
        format!("{}{{{room}}}:{what}", self.config.prefix)
    }

    fn channel(&self, room: &str) -> String {
        format!("{}room:{room}", self.config.prefix)
    }

    fn member_keys(&self, room: &str, user: u64) -> Vec<String> {
        vec![
            self.key(room, "members"),
            self.key(room, &format!("u:{user}")),
        ]
    }

    fn ttl_ms(duration: Duration) -> String {
        duration.as_millis().max(1).to_string()
    }

    /// Hands every message on a subscribed channel to this replica's
    /// members of that room.
    fn follow(self: &Arc<Self>) {
        let mut messages = self.subscriber.message_rx();
        let broker = Arc::downgrade(self);
        let _resubscribe = common::redis::keep_subscribed(&self.subscriber);
        let prefix = self.channel("");
        tokio::spawn(async move {
            loop {
                let message = match messages.recv().await {
                    Ok(message) => message,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        metrics::counter!("chat_fanout_lagged_total").increment(missed);
                        tracing::warn!(missed, "room messages were dropped before fan-out");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let Some(broker) = broker.upgrade() else {
                    break;
                };
                let Some(room) = message.channel.strip_prefix(prefix.as_str()) else {
                    continue;
                };
                let Some(payload) = message.value.as_str() else {
                    continue;
                };
                broker.fan_out(room, &payload);
            }
        });
    }

    fn fan_out(&self, room: &str, payload: &str) {
        if let Some(frame) = payload.strip_prefix("e ") {
            self.hub.deliver(room, &Frame::from(frame));
            return;
        }
        let Some(rest) = payload.strip_prefix("m ") else {
            return;
        };
        let mut parts = rest.splitn(4, ' ');
        let (Some(offset), Some(epoch), Some(published_us), Some(body)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!(room, "malformed room message");
            return;
        };
        let (Ok(offset), Ok(published_us), Ok(stored)) = (
            offset.parse::<u64>(),
            published_us.parse::<u64>(),
            serde_json::from_str::<Stored>(body),
        ) else {
            tracing::warn!(room, "malformed room message");
            return;
        };
        let message = stored.into_message(room, offset, epoch);
        self.hub
            .deliver(room, &Frame::from(ServerFrame::Message(&message).to_text()));
        let elapsed_us = now_us().saturating_sub(published_us);
        metrics::histogram!("chat_fanout_seconds").record(elapsed_us as f64 / 1e6);
    }

    /// Every third of the presence TTL, renews this replica's members.
    fn refresh_presence(self: &Arc<Self>) {
        let broker = Arc::downgrade(self);
        let every = (self.config.presence_ttl / 3).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(broker) = Weak::upgrade(&broker) else {
                    break;
                };
                for room in broker.hub.local_rooms() {
                    for member in broker.hub.members(&room) {
                        if let Err(e) = broker.mark_present(&room, &member).await {
                            tracing::warn!(error = %common::exit::chain(&e), room, "presence refresh failed");
                        }
                    }
                }
            }
        });
    }

    async fn mark_present(&self, room: &str, member: &Member) -> Result<bool, BrokerError> {
        let args = vec![
            member_entry(member),
            self.replica.clone(),
            Self::ttl_ms(self.config.presence_ttl),
        ];
        let first: i64 = self
            .scripts
            .present
            .evalsha_with_reload(&self.client, self.member_keys(room, member.id), args)
            .await
            .map_err(unavailable)?;
        Ok(first == 1)
    }

    /// Subscribes or unsubscribes so that this replica hears the room
    /// exactly while it has members in it.
    async fn sync_subscription(&self, room: &str) -> Result<(), BrokerError> {
        let lock = {
            let mut subs = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
            subs.entry(room.to_owned()).or_default().clone()
        };
        let mut subscribed = lock.lock().await;
        let wanted = self.hub.user_count(room) > 0;
        let result = if wanted && !*subscribed {
            self.subscriber
                .subscribe(self.channel(room))
                .await
                .map(|()| *subscribed = true)
        } else if !wanted && *subscribed {
            self.subscriber
                .unsubscribe(self.channel(room))
                .await
                .map(|()| *subscribed = false)
        } else {
            Ok(())
        };
        if !*subscribed {
            drop(subscribed);
            let mut subs = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
            // Only we (and the map) hold it: nobody is mid-change.
            if subs.get(room).is_some_and(|l| Arc::strong_count(l) == 2) {
                subs.remove(room);
            }
        }
        result.map_err(unavailable)
    }

    async fn read(&self, room: &str, mode: &[String]) -> Result<Read, BrokerError> {
        let keys = vec![self.key(room, "meta"), self.key(room, "log")];
        let mut args = vec![new_epoch(), Self::ttl_ms(self.config.history.ttl)];
        args.extend_from_slice(mode);
        let reply: Value = self
            .scripts
            .read
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(unavailable)?;
        parse_read(room, reply)
    }
}

struct Read {
    epoch: String,
    top: u64,
    messages: Vec<ChatMessage>,
}

fn parse_read(room: &str, reply: Value) -> Result<Read, BrokerError> {
    let Value::Array(parts) = reply else {
        return Err(malformed(format!("unexpected read reply {reply:?}")));
    };
    let [epoch, top, Value::Array(entries)] = &parts[..] else {
        return Err(malformed(format!("unexpected read reply {parts:?}")));
    };
    let epoch = epoch
        .as_string()
        .ok_or_else(|| malformed("epoch is not a string".into()))?;
    let top = top
        .as_u64()
        .ok_or_else(|| malformed("top offset is not a number".into()))?;
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        // Each entry is [id, [field, value]] with id `0-<offset>`.
        let Value::Array(entry) = entry else { continue };
        let [id, Value::Array(fields)] = &entry[..] else {
            continue;
        };
        let offset = id
            .as_str()
            .and_then(|id| id.strip_prefix("0-").and_then(|o| o.parse::<u64>().ok()));
        let body = fields.get(1).and_then(Value::as_str);
        let (Some(offset), Some(body)) = (offset, body) else {
            return Err(malformed(format!("unexpected stream entry {entry:?}")));
        };
        let stored: Stored = serde_json::from_str(&body)
            .map_err(|e| malformed(format!("unreadable stored message: {e}")))?;
        messages.push(stored.into_message(room, offset, &epoch));
    }
    Ok(Read {
        epoch,
        top,
        messages,
    })
}

fn member_entry(member: &Member) -> String {
    serde_json::to_string(member).unwrap_or_default()
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, room: &str, draft: Draft) -> Result<ChatMessage, BrokerError> {
        let stored = Stored {
            id: uuid::Uuid::now_v7().to_string(),
            user: draft.user,
            content: draft.content,
            mentions: draft.mentions,
            sent_at: now_ms(),
        };
        let body = serde_json::to_string(&stored)
            .map_err(|e| malformed(format!("cannot encode message: {e}")))?;
        let keys = vec![self.key(room, "meta"), self.key(room, "log")];
        let args = vec![
            new_epoch(),
            self.config.history.size.to_string(),
            Self::ttl_ms(self.config.history.ttl),
            body,
            self.channel(room),
            now_us().to_string(),
        ];
        let reply: Value = self
            .scripts
            .publish
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(unavailable)?;
        let (offset, epoch) = match reply {
            Value::Array(parts) => match &parts[..] {
                [offset, epoch] => (offset.as_u64(), epoch.as_string()),
                _ => (None, None),
            },
            _ => (None, None),
        };
        let (Some(offset), Some(epoch)) = (offset, epoch) else {
            return Err(malformed("unexpected publish reply".into()));
        };
        Ok(stored.into_message(room, offset, &epoch))
    }

    async fn broadcast(&self, room: &str, frame: Frame) -> Result<(), BrokerError> {
        self.scripts
            .broadcast
            .evalsha_with_reload::<(), _, _>(
                &self.client,
                vec![self.key(room, "log")],
                vec![self.channel(room), format!("e {frame}")],
            )
            .await
            .map_err(unavailable)
    }

    async fn recover(
        &self,
        room: &str,
        since: Option<&Position>,
        limit: usize,
    ) -> Result<Recovery, BrokerError> {
        let mode = match since {
            Some(since) => vec![
                "after".to_owned(),
                since.offset.to_string(),
                since.epoch.clone(),
                limit.to_string(),
            ],
            None => vec!["none".to_owned()],
        };
        let read = self.read(room, &mode).await?;
        Ok(recover_from(
            &read.epoch,
            read.top,
            &read.messages,
            since,
            limit,
        ))
    }

    async fn history(&self, room: &str, limit: usize) -> Result<Recovery, BrokerError> {
        let mut read = self
            .read(room, &["last".to_owned(), limit.to_string()])
            .await?;
        read.messages.reverse();
        Ok(Recovery {
            position: Position {
                offset: read.top,
                epoch: read.epoch,
            },
            recovered: true,
            missed: read.messages,
        })
    }

    async fn watch(&self, room: &str) -> Result<(), BrokerError> {
        self.sync_subscription(room).await
    }

    async fn unwatch(&self, room: &str) -> Result<(), BrokerError> {
        self.sync_subscription(room).await
    }

    async fn set_presence(
        &self,
        room: &str,
        member: &Member,
        present: bool,
    ) -> Result<bool, BrokerError> {
        if present {
            return self.mark_present(room, member).await;
        }
        let args = vec![member_entry(member), self.replica.clone()];
        let gone: i64 = self
            .scripts
            .absent
            .evalsha_with_reload(&self.client, self.member_keys(room, member.id), args)
            .await
            .map_err(unavailable)?;
        Ok(gone == 1)
    }

    async fn presence(&self, room: &str) -> Result<Vec<Member>, BrokerError> {
        let entries: Vec<String> = self
            .scripts
            .members
            .evalsha_with_reload(&self.client, vec![self.key(room, "members")], ())
            .await
            .map_err(unavailable)?;
        let mut members: Vec<Member> = entries
            .iter()
            .filter_map(|e| serde_json::from_str(e).ok())
            .collect();
        members.sort_by_key(|m| m.id);
        members.dedup_by_key(|m| m.id);
        Ok(members)
    }

    async fn presence_count(&self, room: &str) -> Result<usize, BrokerError> {
        let count: u64 = self
            .scripts
            .count
            .evalsha_with_reload(&self.client, vec![self.key(room, "members")], ())
            .await
            .map_err(unavailable)?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    async fn create_room(&self, room: &str, access: &RoomAccess) -> Result<bool, BrokerError> {
        let value = serde_json::to_string(access).map_err(unavailable)?;
        // NX: of two replicas creating one name, one wins. No expiry.
        let set: Option<String> = self
            .client
            .set(
                self.key(room, "access"),
                value,
                None,
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn room_access(&self, room: &str) -> Result<Option<RoomAccess>, BrokerError> {
        let raw: Option<String> = self
            .client
            .get(self.key(room, "access"))
            .await
            .map_err(unavailable)?;
        raw.map(|raw| {
            serde_json::from_str(&raw).map_err(|e| malformed(format!("room access: {e}")))
        })
        .transpose()
    }

    async fn remember(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, BrokerError> {
        let key = format!("{}idempotency:{{{key}}}", self.config.prefix);
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let set: Option<String> = self
            .client
            .set(
                &key,
                value,
                Some(Expiration::PX(millis)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        if set.is_some() {
            return Ok(None);
        }
        // Kept values never change, so reading after a lost NX is safe; one
        // that expired in between is taken as never stored.
        let kept: Option<String> = self.client.get(&key).await.map_err(unavailable)?;
        Ok(kept)
    }
}
