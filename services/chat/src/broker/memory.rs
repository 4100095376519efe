//! One process, no server: rooms' histories in memory, delivery straight
//! to the local hub. A restart starts every room in a new epoch.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    Broker, BrokerError, Draft, HistoryLimits, MAX_CREATED_ROOMS, Recovery, RoomAccess, new_epoch,
    now_ms, recover_from,
};
use crate::hub::{Frame, Hub};
use crate::protocol::{ChatMessage, Member, Position, ServerFrame};

struct Log {
    epoch: String,
    top: u64,
    messages: VecDeque<ChatMessage>,
    touched: Instant,
}

pub struct MemoryBroker {
    hub: Arc<Hub>,
    limits: HistoryLimits,
    logs: Mutex<Logs>,
    created: Mutex<HashMap<String, RoomAccess>>,
    remembered: Mutex<HashMap<String, (String, Instant)>>,
}

struct Logs {
    rooms: HashMap<String, Log>,
    swept: Instant,
}

impl MemoryBroker {
    pub fn new(hub: Arc<Hub>, limits: HistoryLimits) -> Self {
        Self {
            hub,
            limits,
            logs: Mutex::new(Logs {
                rooms: HashMap::new(),
                swept: Instant::now(),
            }),
            created: Mutex::new(HashMap::new()),
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` on the room's log, starting a new epoch for a room that has
    /// none or whose history expired.
    fn with_log<T>(&self, room: &str, f: impl FnOnce(&mut Log) -> T) -> T {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = self.limits.ttl;
        // Expired rooms are swept at most once a second, not per message.
        if logs.swept.elapsed() >= std::time::Duration::from_secs(1) {
            logs.rooms.retain(|_, log| log.touched.elapsed() < ttl);
            logs.swept = Instant::now();
        }
        if logs
            .rooms
            .get(room)
            .is_some_and(|log| log.touched.elapsed() >= ttl)
        {
            logs.rooms.remove(room);
        }
        let log = logs.rooms.entry(room.to_owned()).or_insert_with(|| Log {
            epoch: new_epoch(),
            top: 0,
            messages: VecDeque::new(),
            touched: Instant::now(),
        });
        f(log)
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, room: &str, draft: Draft) -> Result<ChatMessage, BrokerError> {
        let started = Instant::now();
        let size = self.limits.size;
        let message = self.with_log(room, |log| {
            log.top += 1;
            log.touched = Instant::now();
            let message = ChatMessage {
                room: room.to_owned(),
                id: uuid::Uuid::now_v7().to_string(),
                offset: log.top,
                epoch: log.epoch.clone(),
                user: draft.user,
                content: draft.content,
                mentions: draft.mentions,
                sent_at: now_ms(),
            };
            log.messages.push_back(message.clone());
            while log.messages.len() > size {
                log.messages.pop_front();
            }
            message
        });
        let frame: Frame = Frame::from(ServerFrame::Message(&message).to_text());
        self.hub.deliver(room, &frame);
        metrics::histogram!("chat_fanout_seconds").record(started.elapsed().as_secs_f64());
        Ok(message)
    }

    async fn broadcast(&self, room: &str, frame: Frame) -> Result<(), BrokerError> {
        self.hub.deliver(room, &frame);
        Ok(())
    }

    async fn recover(
        &self,
        room: &str,
        since: Option<&Position>,
        limit: usize,
    ) -> Result<Recovery, BrokerError> {
        Ok(self.with_log(room, |log| {
            recover_from(
                &log.epoch,
                log.top,
                log.messages.make_contiguous(),
                since,
                limit,
            )
        }))
    }

    async fn history(&self, room: &str, limit: usize) -> Result<Recovery, BrokerError> {
        Ok(self.with_log(room, |log| {
            let messages = log.messages.make_contiguous();
            let start = messages.len().saturating_sub(limit);
            Recovery {
                position: Position {
                    offset: log.top,
                    epoch: log.epoch.clone(),
                },
                recovered: true,
                missed: messages[start..].to_vec(),
            }
        }))
    }

    async fn watch(&self, _room: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn unwatch(&self, _room: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn set_presence(&self, _: &str, _: &Member, _: bool) -> Result<bool, BrokerError> {
        // The hub is the whole truth in one process, and the caller has
        // checked it.
        Ok(true)
    }

    async fn presence(&self, room: &str) -> Result<Vec<Member>, BrokerError> {
        Ok(self.hub.members(room))
    }

    async fn presence_count(&self, room: &str) -> Result<usize, BrokerError> {
        Ok(self.hub.user_count(room))
    }

    async fn create_room(&self, room: &str, access: &RoomAccess) -> Result<bool, BrokerError> {
        let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        if created.contains_key(room) {
            return Ok(false);
        }
        if created.len() >= MAX_CREATED_ROOMS {
            return Err(BrokerError::Full);
        }
        created.insert(room.to_owned(), access.clone());
        Ok(true)
    }

    async fn room_access(&self, room: &str) -> Result<Option<RoomAccess>, BrokerError> {
        let created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        Ok(created.get(room).cloned())
    }

    async fn remember(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, BrokerError> {
        let mut remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((kept, until)) = remembered.get(key)
            && *until > now
        {
            return Ok(Some(kept.clone()));
        }
        // Bounded like the rooms themselves: expired keys go first, and a
        // store still full refuses rather than grows.
        if remembered.len() >= MAX_CREATED_ROOMS {
            remembered.retain(|_, (_, until)| *until > now);
            if remembered.len() >= MAX_CREATED_ROOMS {
                return Err(BrokerError::Full);
            }
        }
        remembered.insert(key.to_owned(), (value.to_owned(), now + ttl));
        Ok(None)
    }
}
