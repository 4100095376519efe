//! Live delivery to the open streams of this replica.
//!
//! Each stream has a bounded queue. Unlike the seed's broadcaster, a
//! stream whose queue is full is not waited for: it is dropped (its
//! response ends), counted in `notifications_stream_drops_total`, and its
//! client reconnects with `Last-Event-ID` to get what it missed from the
//! store. So a slow or dead client never holds up anyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::store::Notification;

/// Each user's open streams: (stream id, its queue).
type Streams = HashMap<i64, Vec<(u64, mpsc::Sender<Arc<Notification>>)>>;

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
    pub queue: mpsc::Receiver<Arc<Notification>>,
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
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(user).or_default().push((id, tx));
        metrics::gauge!("notifications_open_streams").increment(1.0);
        Listener {
            live: self.clone(),
            user,
            id,
            queue: rx,
        }
    }

    /// Hands `notification` to every stream of its user here; a stream
    /// that cannot take it now is cut off.
    pub fn deliver(&self, notification: Arc<Notification>) {
        let mut streams = self.lock();
        let Some(list) = streams.get_mut(&notification.user_id) else {
            return;
        };
        list.retain(|(_, tx)| match tx.try_send(notification.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("notifications_stream_drops_total").increment(1);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
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
        let mut slow = live.listen(1, 1);
        let mut other_tab = live.listen(1, 8);
        let mut someone_else = live.listen(2, 8);
        live.deliver(notification(1, 1));
        live.deliver(notification(1, 2));
        assert_eq!(slow.queue.try_recv().unwrap().seq, 1);
        assert!(
            matches!(
                slow.queue.try_recv(),
                Err(mpsc::error::TryRecvError::Disconnected)
            ),
            "cut off, not waited for"
        );
        assert_eq!(other_tab.queue.try_recv().unwrap().seq, 1);
        assert_eq!(other_tab.queue.try_recv().unwrap().seq, 2);
        assert!(
            someone_else.queue.try_recv().is_err(),
            "only the user's own"
        );
        assert_eq!(live.open(), 2);
        drop(other_tab);
        assert_eq!(live.open(), 1);
    }
}
