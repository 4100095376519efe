//! This replica's connections and the rooms they are in.
//!
//! Delivery never waits on a client: each connection has a bounded queue of
//! serialized frames, and a frame that does not fit marks the connection as
//! too slow; its session then closes it with [`SLOW_CONSUMER`]. The room
//! goes on at full speed (the seed's hub blocked every member on the
//! slowest one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::Member;

pub type ConnId = u64;

/// Close code for a client that could not keep up (private-use range).
pub const SLOW_CONSUMER: u16 = 4008;

struct Handle {
    member: Member,
    tx: mpsc::Sender<Arc<str>>,
    kicked: CancellationToken,
}

#[derive(Default)]
pub struct Hub {
    rooms: RwLock<HashMap<String, HashMap<ConnId, Arc<Handle>>>>,
    connections: Mutex<HashMap<ConnId, Arc<Handle>>>,
    per_user: Mutex<HashMap<u64, usize>>,
    next_id: AtomicU64,
}

/// A registered connection; unregisters (leaving every room) when dropped.
pub struct Registration {
    hub: Arc<Hub>,
    pub id: ConnId,
    pub member: Member,
    pub outbound: mpsc::Receiver<Arc<str>>,
    /// Cancelled when the connection fell behind.
    pub kicked: CancellationToken,
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
        let (tx, outbound) = mpsc::channel(queue.max(1));
        let kicked = CancellationToken::new();
        let handle = Arc::new(Handle {
            member: member.clone(),
            tx,
            kicked: kicked.clone(),
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
            outbound,
            kicked,
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
        let first = members.is_empty();
        let added = members.insert(id, handle).is_none();
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
        let removed = members.remove(&id).is_some();
        let empty = members.is_empty();
        if empty {
            rooms.remove(room);
        }
        let count = rooms.len();
        drop(rooms);
        metrics::gauge!("chat_rooms").set(count as f64);
        (removed, empty)
    }

    pub fn rooms_of(&self, id: ConnId) -> Vec<String> {
        self.rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, members)| members.contains_key(&id))
            .map(|(room, _)| room.clone())
            .collect()
    }

    /// Whether connection `id` is in `room` (one lookup, for every send).
    pub fn in_room(&self, room: &str, id: ConnId) -> bool {
        self.rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .is_some_and(|m| m.contains_key(&id))
    }

    /// Whether `user` is in `room` through another connection than `except`.
    pub fn user_in_room(&self, room: &str, user: u64, except: ConnId) -> bool {
        self.rooms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .is_some_and(|m| m.iter().any(|(id, h)| *id != except && h.member.id == user))
    }

    /// The distinct users in `room` on this replica.
    pub fn members(&self, room: &str) -> Vec<Member> {
        let rooms = self.rooms.read().unwrap_or_else(|p| p.into_inner());
        let mut members: Vec<Member> = rooms
            .get(room)
            .map(|m| m.values().map(|h| h.member.clone()).collect())
            .unwrap_or_default();
        members.sort_by_key(|m| m.id);
        members.dedup_by_key(|m| m.id);
        members
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
    pub fn deliver(&self, room: &str, frame: &Arc<str>) -> usize {
        let rooms = self.rooms.read().unwrap_or_else(|p| p.into_inner());
        let Some(members) = rooms.get(room) else {
            return 0;
        };
        let mut delivered = 0;
        for handle in members.values() {
            match handle.tx.try_send(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !handle.kicked.is_cancelled() {
                        metrics::counter!("chat_slow_clients_dropped_total").increment(1);
                        handle.kicked.cancel();
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        metrics::counter!("chat_messages_out_total").increment(delivered as u64);
        delivered
    }

    /// Sends `frame` to one connection (answers, acknowledgements).
    pub fn send_to(&self, id: ConnId, frame: Arc<str>) {
        let handle = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(handle) = handle
            && let Err(mpsc::error::TrySendError::Full(_)) = handle.tx.try_send(frame)
            && !handle.kicked.is_cancelled()
        {
            metrics::counter!("chat_slow_clients_dropped_total").increment(1);
            handle.kicked.cancel();
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
            let frame: Arc<str> = Arc::from(format!("m{i}"));
            hub.deliver("r", &frame);
            assert_eq!(&*fast.outbound.try_recv().unwrap(), format!("m{i}"));
        }
        assert!(slow.kicked.is_cancelled(), "the third frame did not fit");
        assert!(!fast.kicked.is_cancelled());
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
