//! A connection's outbound side: a bounded queue of serialized frames, the
//! heartbeat's request for a ping, and why the connection must end if it
//! must — everything a session waits on, behind one `Notify`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// A serialized server frame. Reference-counted bytes: fanning one out to
/// a room clones a pointer, and the session hands the same bytes to the
/// socket without copying them again.
pub type Frame = bytestring::ByteString;

/// A connection's bounded queue of frames, and why it must end if it
/// must. Lighter than a channel plus cancellation tokens for the common
/// case of ten thousand idle connections: nothing is allocated until a
/// frame is queued, a drained queue gives its memory back, and the session
/// waits on one thing.
pub(crate) struct Outbox {
    frames: Mutex<VecDeque<Frame>>,
    pub(crate) ready: Notify,
    capacity: usize,
    end: AtomicU8,
    /// The hub's heartbeat asks for a ping.
    pub(crate) ping: AtomicBool,
    /// When the client last sent anything (ms since the hub started).
    pub(crate) last_seen: AtomicU64,
}

const OPEN: u8 = 0;
const KICKED: u8 = 1;
pub(crate) const CLOSING: u8 = 2;
pub(crate) const IDLE: u8 = 3;

impl Outbox {
    pub(crate) fn new(capacity: usize, now_ms: u64) -> Self {
        Self {
            frames: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity: capacity.max(1),
            end: AtomicU8::new(OPEN),
            ping: AtomicBool::new(false),
            last_seen: AtomicU64::new(now_ms),
        }
    }

    /// Queues `frame`; false when the queue is full.
    fn push(&self, frame: Frame) -> bool {
        let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        if frames.len() >= self.capacity {
            return false;
        }
        frames.push_back(frame);
        drop(frames);
        self.ready.notify_one();
        true
    }

    fn pop(&self) -> Option<Frame> {
        let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        let frame = frames.pop_front();
        if frames.is_empty() && frames.capacity() > 16 {
            *frames = VecDeque::new();
        }
        frame
    }

    /// Marks the connection as ending (the first reason wins); true when
    /// this call did it.
    pub(crate) fn end(&self, why: u8) -> bool {
        let ended = self
            .end
            .compare_exchange(OPEN, why, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ended {
            self.ready.notify_one();
        }
        ended
    }

    fn ended(&self) -> Option<End> {
        match self.end.load(Ordering::Acquire) {
            KICKED => Some(End::TooSlow),
            CLOSING => Some(End::ShuttingDown),
            IDLE => Some(End::Idle),
            _ => None,
        }
    }

    /// A full queue kicks the connection, counted once.
    pub(crate) fn push_or_kick(&self, frame: Frame) -> bool {
        if self.push(frame) {
            return true;
        }
        if self.end(KICKED) {
            metrics::counter!("chat_slow_clients_dropped_total").increment(1);
        }
        false
    }
}

/// Why a connection must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Its queue overflowed: it did not read fast enough.
    TooSlow,
    /// The service is draining.
    ShuttingDown,
    /// The client sent nothing (not even a pong) for the idle timeout.
    Idle,
}

/// What a session is told next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Frame(Frame),
    /// Time to ping the client.
    Ping,
    End(End),
}

/// The receiving end of a connection's queue.
pub struct Outbound(pub(crate) Arc<Outbox>);

#[derive(Debug, PartialEq, Eq)]
pub struct Empty;

impl Outbound {
    /// The next frame, or why the connection must end (which comes first,
    /// even with frames queued).
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(end) = self.0.ended() {
                return Next::End(end);
            }
            // Before frames: a client kept busy reading must still be asked
            // for a pong, or it would look idle.
            if self.0.ping.swap(false, Ordering::AcqRel) {
                return Next::Ping;
            }
            if let Some(frame) = self.0.pop() {
                return Next::Frame(frame);
            }
            self.0.ready.notified().await;
        }
    }

    /// Resolves when the connection must end.
    pub async fn ended(&self) -> End {
        loop {
            if let Some(end) = self.0.ended() {
                return end;
            }
            // Frames wake this too; `next` pops before it waits, so a wake
            // taken here loses nothing.
            self.0.ready.notified().await;
        }
    }

    pub fn try_recv(&mut self) -> Result<Frame, Empty> {
        self.0.pop().ok_or(Empty)
    }

    pub fn end(&self) -> Option<End> {
        self.0.ended()
    }

    pub(crate) fn seen_at(&self, now_ms: u64) {
        self.0.last_seen.store(now_ms, Ordering::Relaxed);
    }
}
