//! Live delivery to the open streams of this replica.
//!
//! Each stream has a bounded queue. Unlike the seed's broadcaster, a
//! stream whose queue is full is not waited for: it is dropped (its
//! response ends), counted in `notifications_stream_drops_total`, and its
//! client reconnects with `Last-Event-ID` to get what it missed from the
//! store. So a slow or dead client never holds up anyone else.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::store::Notification;

/// One stream's bounded queue. Lighter than a tokio channel (whose first
/// block of slots every idle stream would carry): empty, it allocates
/// nothing beyond itself.
struct Queue {
    state: Mutex<QueueState>,
    ready: Notify,
    capacity: usize,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Arc<Notification>>,
    /// Cut off: what is queued is still read, then the stream ends.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `notification`; false (and the queue closed) when full.
    fn push(&self, notification: Arc<Notification>) -> bool {
        let mut state = self.lock();
        let taken = state.items.len() < self.capacity;
        if taken {
            state.items.push_back(notification);
        } else {
            state.closed = true;
        }
        drop(state);
        // One waiter at most; a permit is kept if it is not waiting yet.
        self.ready.notify_one();
        taken
    }
}

/// Why [`Listener::try_recv`] has nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecv {
    Empty,
    /// Cut off (it fell behind): the stream must end.
    Closed,
}

/// Each user's open streams: (stream id, its queue).
type Streams = HashMap<i64, Vec<(u64, Arc<Queue>)>>;

#[derive(Default)]
pub struct Live {
    streams: Mutex<Streams>,
    next: AtomicU64,
}

/// A stream's end of its queue; leaving when dropped.
pub struct Listener {
    live: Arc<Live>,
    user: i64,
    id: u64,
    queue: Arc<Queue>,
}

impl Listener {
    /// The next notification; `None` once cut off and drained.
    pub async fn recv(&self) -> Option<Arc<Notification>> {
        loop {
            match self.try_recv() {
                Ok(notification) => return Some(notification),
                Err(TryRecv::Closed) => return None,
                Err(TryRecv::Empty) => self.queue.ready.notified().await,
            }
        }
    }

    pub fn try_recv(&self) -> Result<Arc<Notification>, TryRecv> {
        let mut state = self.queue.lock();
        match state.items.pop_front() {
            Some(notification) => Ok(notification),
            None if state.closed => Err(TryRecv::Closed),
            None => Err(TryRecv::Empty),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut streams = self.live.lock();
        if let Some(list) = streams.get_mut(&self.user) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                streams.remove(&self.user);
            }
        }
        metrics::gauge!("notifications_open_streams").decrement(1.0);
    }
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new stream of `user`'s notifications, `capacity` deep.
    pub fn listen(self: &Arc<Self>, user: i64, capacity: usize) -> Listener {
        let queue = Arc::new(Queue {
            state: Mutex::default(),
            ready: Notify::new(),
            capacity: capacity.max(1),
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(user)
            .or_default()
            .push((id, queue.clone()));
        metrics::gauge!("notifications_open_streams").increment(1.0);
        Listener {
            live: self.clone(),
            user,
            id,
            queue,
        }
    }

    /// Hands `notification` to every stream of its user here; a stream
    /// that cannot take it now is cut off.
    pub fn deliver(&self, notification: Arc<Notification>) {
        let mut streams = self.lock();
        let Some(list) = streams.get_mut(&notification.user_id) else {
            return;
        };
        list.retain(|(_, queue)| {
            let taken = queue.push(notification.clone());
            if !taken {
                metrics::counter!("notifications_stream_drops_total").increment(1);
            }
            taken
        });
        if list.is_empty() {
            streams.remove(&notification.user_id);
        }
    }

    /// Open streams here.
    pub fn open(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{Kind, Topic};

    fn notification(user_id: i64, seq: i64) -> Arc<Notification> {
        Arc::new(Notification {
            id: seq,
            seq,
            kind: Kind::Info,
            topic: Topic::System,
            title: "t".into(),
            message: "m".into(),
            user_id,
            read: false,
            created_at: "2026-12-03T12:00:00.000Z".into(),
        })
    }

    #[test]
    fn a_stream_that_falls_behind_is_cut_off_and_the_others_still_receive() {
        let live = Arc::new(Live::default());
        let slow = live.listen(1, 1);
        let other_tab = live.listen(1, 8);
        let someone_else = live.listen(2, 8);
        live.deliver(notification(1, 1));
        live.deliver(notification(1, 2));
        assert_eq!(slow.try_recv().unwrap().seq, 1);
        assert_eq!(
            slow.try_recv().unwrap_err(),
            TryRecv::Closed,
            "cut off, not waited for"
        );
        assert_eq!(other_tab.try_recv().unwrap().seq, 1);
        assert_eq!(other_tab.try_recv().unwrap().seq, 2);
        assert_eq!(
            someone_else.try_recv().unwrap_err(),
            TryRecv::Empty,
            "only the user's own"
        );
        assert_eq!(live.open(), 2);
        drop(other_tab);
        assert_eq!(live.open(), 1);
    }
}
