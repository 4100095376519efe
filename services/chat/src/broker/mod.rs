//! Where a room's messages go: an offset and a place in the room's history,
//! then every replica's members. In process by default ([`MemoryBroker`]);
//! Redis streams and pub/sub when replicas share rooms.

mod memory;
mod redis;
mod redis_scripts;

use std::time::Duration;

use async_trait::async_trait;

pub use common::redis::RedisConnectError;
pub use memory::MemoryBroker;
pub use redis::{RedisBroker, RedisBrokerConfig};

use crate::hub::Frame;
use crate::protocol::{ChatMessage, Member, Position};

/// A message before the broker places it.
#[derive(Clone, Debug)]
pub struct Draft {
    pub user: Member,
    pub content: String,
    pub mentions: Vec<String>,
}

/// What a (re)joining client gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    pub position: Position,
    /// Everything after the client's position is in `missed`.
    pub recovered: bool,
    pub missed: Vec<ChatMessage>,
}

/// How much of a room's past is kept.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLimits {
    /// Messages kept per room.
    pub size: usize,
    /// How long a room's history lives after its last message.
    pub ttl: Duration,
}

/// Who may enter a room that was created explicitly; a room nobody created
/// is public, as rooms always were.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomAccess {
    pub private: bool,
    /// Who created it.
    pub owner: u64,
    /// Who may join and read it when private (the owner included), sorted.
    pub members: Vec<u64>,
    /// The digest of the `Idempotency-Key` (and its caller) that created
    /// it, kept with the room so a retry can tell its own creation from
    /// someone else's claim, whichever attempt got through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

impl RoomAccess {
    pub fn admits(&self, user: u64) -> bool {
        !self.private || self.members.binary_search(&user).is_ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the room store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("this replica keeps no more created rooms")]
    Full,
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Gives the message the room's next offset, keeps it in the room's
    /// history and delivers it to the room's members on every replica.
    async fn publish(&self, room: &str, draft: Draft) -> Result<ChatMessage, BrokerError>;

    /// Delivers an ephemeral frame (presence, typing) to the room's members
    /// on every replica; it is not kept.
    async fn broadcast(&self, room: &str, frame: Frame) -> Result<(), BrokerError>;

    /// The room's position and, given the client's last position, what it
    /// missed (at most `limit` messages; more means not recoverable).
    async fn recover(
        &self,
        room: &str,
        since: Option<&Position>,
        limit: usize,
    ) -> Result<Recovery, BrokerError>;

    /// The room's recent history, oldest first.
    async fn history(&self, room: &str, limit: usize) -> Result<Recovery, BrokerError>;

    /// Starts receiving the room's traffic on this replica (its first local
    /// member joined).
    async fn watch(&self, room: &str) -> Result<(), BrokerError>;

    /// Stops receiving it (its last local member left).
    async fn unwatch(&self, room: &str) -> Result<(), BrokerError>;

    /// Records that `member` is (or no longer is) in the room through this
    /// replica; called when the user's first connection here joins and when
    /// the last one leaves. True when that changed the room's presence (the
    /// user was on no other replica), so the change should be announced.
    async fn set_presence(
        &self,
        room: &str,
        member: &Member,
        present: bool,
    ) -> Result<bool, BrokerError>;

    /// Who is in the room, on every replica.
    async fn presence(&self, room: &str) -> Result<Vec<Member>, BrokerError>;

    /// How many users are in the room, on every replica (without listing
    /// them).
    async fn presence_count(&self, room: &str) -> Result<usize, BrokerError>;

    /// Claims `room` with `access`, for good (access rules never expire,
    /// or a private room would turn public); false when it was claimed
    /// before.
    async fn create_room(&self, room: &str, access: &RoomAccess) -> Result<bool, BrokerError>;

    /// The room's access rules; `None` for a room nobody created (public).
    async fn room_access(&self, room: &str) -> Result<Option<RoomAccess>, BrokerError>;

    /// Stores `value` under `key` for `ttl` unless the key holds a value,
    /// which is returned instead (what an idempotency key was first used
    /// for, shared by every replica).
    async fn remember(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, BrokerError>;
}

/// Rooms the in-process broker keeps access rules for; beyond it,
/// creating one is refused rather than growing without bound.
pub const MAX_CREATED_ROOMS: usize = 100_000;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh epoch name: unique per history, so a client can tell a restarted
/// or expired room from the one it knew.
pub fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Recovery against a window of retained messages (`retained`, ascending
/// offsets, the newest being `top`).
pub(crate) fn recover_from(
    epoch: &str,
    top: u64,
    retained: &[ChatMessage],
    since: Option<&Position>,
    limit: usize,
) -> Recovery {
    let position = Position {
        offset: top,
        epoch: epoch.to_owned(),
    };
    let Some(since) = since else {
        return Recovery {
            position,
            recovered: true,
            missed: Vec::new(),
        };
    };
    if since.epoch != epoch || since.offset > top {
        return Recovery {
            position,
            recovered: false,
            missed: Vec::new(),
        };
    }
    let missed: Vec<ChatMessage> = retained
        .iter()
        .filter(|m| m.offset > since.offset)
        .cloned()
        .collect();
    let wanted = top - since.offset;
    let complete = missed.len() as u64 == wanted && missed.len() <= limit;
    Recovery {
        position,
        recovered: complete,
        missed: if complete { missed } else { Vec::new() },
    }
}
