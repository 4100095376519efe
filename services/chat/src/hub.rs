//! This replica's connections and the rooms they are in.
//!
//! Delivery never waits on a client: each connection has a bounded queue of
//! serialized frames, and a frame that does not fit marks the connection as
//! too slow; its session then closes it with [`SLOW_CONSUMER`]. The room
//! goes on at full speed: one slow member never holds back the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::outbox::{CLOSING, IDLE, Outbox};
pub use crate::outbox::{Empty, End, Frame, Next, Outbound};
use crate::protocol::Member;

pub type ConnId = u64;

/// Close code for a client that could not keep up (private-use range).
pub const SLOW_CONSUMER: u16 = 4008;

struct Handle {
    member: Member,
    outbox: Arc<Outbox>,
    /// The rooms this connection is in (changed under the hub's room lock).
    rooms: Mutex<Vec<String>>,
}

/// A room's members on this replica.
#[derive(Default)]
struct Room {
    connections: HashMap<ConnId, Arc<Handle>>,
    /// Connections per user, so "is this user here" and "how many users"
    /// are single lookups however large the room.
    users: HashMap<u64, u32>,
}

impl Registration {
    /// The client sent something: it is not idle.
    pub fn seen(&self) {
        self.outbound.seen_at(self.hub.millis());
    }
}

pub struct Hub {
    started: Instant,
    rooms: RwLock<HashMap<String, Room>>,
    connections: Mutex<HashMap<ConnId, Arc<Handle>>>,
    per_user: Mutex<HashMap<u64, usize>>,
    next_id: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            rooms: RwLock::default(),
            connections: Mutex::default(),
            per_user: Mutex::default(),
            next_id: AtomicU64::new(0),
        }
    }
}

/// A registered connection; unregisters (leaving every room) when dropped.
pub struct Registration {
    hub: Arc<Hub>,
    pub id: ConnId,
    pub member: Member,
    pub outbound: Outbound,
}

#[derive(Debug, thiserror::Error)]
#[error("user {user} already has {limit} open connections")]
pub struct TooManyConnections {
    pub user: u64,
    pub limit: usize,
}

impl Hub {
    /// Registers a connection for `member` with an outbound queue of
    /// `queue` frames, unless the user already has `per_user_limit` open.
    pub fn register(
        self: &Arc<Self>,
        member: Member,
        queue: usize,
        per_user_limit: usize,
    ) -> Result<Registration, TooManyConnections> {
        {
            let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
            let count = per_user.entry(member.id).or_default();
            if *count >= per_user_limit {
                return Err(TooManyConnections {
                    user: member.id,
                    limit: per_user_limit,
                });
            }
            *count += 1;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let outbox = Arc::new(Outbox::new(queue, self.millis()));
        let handle = Arc::new(Handle {
            member: member.clone(),
            outbox: outbox.clone(),
            rooms: Mutex::new(Vec::new()),
        });
        let open = {
            let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            connections.insert(id, handle);
            connections.len()
        };
        metrics::gauge!("chat_connections").set(open as f64);
        Ok(Registration {
            hub: self.clone(),
            id,
            member,
            outbound: Outbound(outbox),
        })
    }

    /// Adds the connection to `room`; true when it was not in it already.
    /// Also reports whether the room was empty on this replica before.
    pub fn join(&self, room: &str, id: ConnId) -> (bool, bool) {
        let Some(handle) = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
        else {
            return (false, false);
        };
        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        let members = rooms.entry(room.to_owned()).or_default();
        let first = members.connections.is_empty();
        let added = members.connections.insert(id, handle.clone()).is_none();
        if added {
            *members.users.entry(handle.member.id).or_default() += 1;
            handle
                .rooms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(room.to_owned());
        }
        let count = rooms.len();
        drop(rooms);
        metrics::gauge!("chat_rooms").set(count as f64);
        (added, first)
    }

    /// Removes the connection from `room`; returns (was in it, room is now
    /// empty on this replica).
    pub fn leave(&self, room: &str, id: ConnId) -> (bool, bool) {
        let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        let Some(members) = rooms.get_mut(room) else {
            return (false, false);
        };
        let Some(handle) = members.connections.remove(&id) else {
            return (false, false);
        };
        if let Some(count) = members.users.get_mut(&handle.member.id) {
            *count -= 1;
            if *count == 0 {
                members.users.remove(&handle.member.id);
            }
        }
        handle
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| r != room);
        let empty = members.connections.is_empty();
        if empty {
            rooms.remove(room);
        }
        let count = rooms.len();
        drop(rooms);
        metrics::gauge!("chat_rooms").set(count as f64);
        (true, empty)
    }

    /// The rooms connection `id` is in.
    pub fn rooms_of(&self, id: ConnId) -> Vec<String> {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|h| h.rooms.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// How many rooms connection `id` is in.
    pub fn room_count(&self, id: ConnId) -> usize {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map_or(0, |h| {
                h.rooms.lock().unwrap_or_else(|p| p.into_inner()).len()
            })
    }

    /// Whether connection `id` is in `room` (one lookup, for every send).
    pub fn in_room(&self, room: &str, id: ConnId) -> bool {
        self.rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .is_some_and(|m| m.connections.contains_key(&id))
    }

    /// Whether `user` is in `room` through another connection than `except`.
    pub fn user_in_room(&self, room: &str, user: u64, except: ConnId) -> bool {
        let rooms = self.rooms.read().unwrap_or_else(|p| p.into_inner());
        let Some(members) = rooms.get(room) else {
            return false;
        };
        let count = members.users.get(&user).copied().unwrap_or(0);
        let own = members
            .connections
            .get(&except)
            .is_some_and(|h| h.member.id == user);
        count > u32::from(own)
    }

    /// The distinct users in `room` on this replica.
    pub fn members(&self, room: &str) -> Vec<Member> {
        let rooms = self.rooms.read().unwrap_or_else(|p| p.into_inner());
        let mut members: Vec<Member> = rooms
            .get(room)
            .map(|m| m.connections.values().map(|h| h.member.clone()).collect())
            .unwrap_or_default();
        members.sort_by_key(|m| m.id);
        members.dedup_by_key(|m| m.id);
        members
    }

    /// How many distinct users are in `room` on this replica.
    pub fn user_count(&self, room: &str) -> usize {
        self.rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .map_or(0, |m| m.users.len())
    }

    /// Rooms with members on this replica.
    pub fn local_rooms(&self) -> Vec<String> {
        self.rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Hands `frame` to every member of `room` on this replica without
    /// waiting; a member whose queue is full is kicked.
    pub fn deliver(&self, room: &str, frame: &Frame) -> usize {
        let rooms = self.rooms.read().unwrap_or_else(|p| p.into_inner());
        let Some(members) = rooms.get(room) else {
            return 0;
        };
        let mut delivered = 0;
        for handle in members.connections.values() {
            if handle.outbox.push_or_kick(frame.clone()) {
                delivered += 1;
            }
        }
        metrics::counter!("chat_messages_out_total").increment(delivered as u64);
        delivered
    }

    /// Sends `frame` to one connection (answers, acknowledgements).
    pub fn send_to(&self, id: ConnId, frame: Frame) {
        let handle = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(handle) = handle {
            handle.outbox.push_or_kick(frame);
        }
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// One heartbeat for every connection: the ones silent for longer than
    /// `idle_timeout` are ended, the others pinged. One sweep per replica
    /// instead of a timer per connection.
    pub fn heartbeat(&self, idle_timeout: Duration) {
        let now = self.millis();
        let idle_ms = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let outboxes: Vec<Arc<Outbox>> = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|h| h.outbox.clone())
            .collect();
        for outbox in outboxes {
            if now.saturating_sub(outbox.last_seen.load(Ordering::Relaxed)) > idle_ms {
                outbox.end(IDLE);
            } else {
                outbox.ping.store(true, Ordering::Release);
                outbox.ready.notify_one();
            }
        }
    }

    /// Tells every connection to end: the service is draining.
    pub fn shut_down(&self) {
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        for handle in connections.values() {
            handle.outbox.end(CLOSING);
        }
    }

    pub fn open_connections(&self) -> usize {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn unregister(&self, id: ConnId, user: u64) {
        let open = {
            let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            connections.remove(&id);
            connections.len()
        };
        metrics::gauge!("chat_connections").set(open as f64);
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_user.get_mut(&user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_user.remove(&user);
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for room in self.hub.rooms_of(self.id) {
            self.hub.leave(&room, self.id);
        }
        self.hub.unregister(self.id, self.member.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> Member {
        Member {
            id,
            name: format!("user{id}"),
        }
    }

    #[test]
    fn a_full_queue_kicks_only_that_member() {
        let hub = Arc::new(Hub::default());
        let mut fast = hub.register(member(1), 4, 5).unwrap();
        let slow = hub.register(member(2), 2, 5).unwrap();
        hub.join("r", fast.id);
        hub.join("r", slow.id);
        for i in 0..3 {
            let frame: Frame = Frame::from(format!("m{i}"));
            hub.deliver("r", &frame);
            assert_eq!(&*fast.outbound.try_recv().unwrap(), format!("m{i}"));
        }
        assert_eq!(
            slow.outbound.end(),
            Some(End::TooSlow),
            "the third frame did not fit"
        );
        assert_eq!(fast.outbound.end(), None);
    }

    #[tokio::test]
    async fn the_heartbeat_pings_live_connections_and_ends_silent_ones() {
        let hub = Arc::new(Hub::default());
        let mut live = hub.register(member(1), 4, 5).unwrap();
        let mut silent = hub.register(member(2), 4, 5).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        live.seen();
        hub.heartbeat(Duration::from_millis(50));
        assert_eq!(live.outbound.next().await, Next::Ping);
        assert_eq!(silent.outbound.next().await, Next::End(End::Idle));
        hub.shut_down();
        assert_eq!(live.outbound.next().await, Next::End(End::ShuttingDown));
    }

    #[test]
    fn connections_per_user_are_capped_and_released_on_drop() {
        let hub = Arc::new(Hub::default());
        let a = hub.register(member(7), 4, 2).unwrap();
        let _b = hub.register(member(7), 4, 2).unwrap();
        assert!(hub.register(member(7), 4, 2).is_err());
        hub.join("r", a.id);
        drop(a);
        assert!(hub.members("r").len() <= 1);
        assert!(hub.register(member(7), 4, 2).is_ok(), "a slot was freed");
        assert!(
            hub.local_rooms().is_empty(),
            "the dropped member left its room"
        );
    }
}
