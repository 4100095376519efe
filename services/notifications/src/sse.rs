//! `GET /api/v1/notifications/stream`: the signed-in user's notifications
//! as server-sent events.
//!
//! - Each event is `id: <seq>`, `event: notification`, `data: <json>`.
//! - The stream opens with `retry:` advice and a comment, so the first
//!   byte is on the wire before any notification exists (proxies and
//!   clients see the stream is alive).
//! - A comment every `NOTIFICATIONS_STREAM_HEARTBEAT` keeps idle
//!   connections from being closed by proxies.
//! - `Last-Event-ID: N` gets every notification after N from the store,
//!   then the live ones: the stream listens before it reads the store, and
//!   sends each `seq` once and in order, so there is no gap and no
//!   duplicate at the seam. A live one that skips ahead (another one
//!   committed first, or was dropped) sends it back to the store for what
//!   lies between.
//! - Without `Last-Event-ID` the stream starts from now.
//! - It ends when the host drains (the client reconnects elsewhere with
//!   its `Last-Event-ID`), when this stream fell too far behind (see
//!   [`crate::live`]), and when the access token it was opened with
//!   expires: a token revoked at the gateway streams no longer than it
//!   would have lived, and the client reconnects with a fresh one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use tokio_util::sync::CancellationToken;

use common::problem::Problem;

use crate::App;
use crate::live::Listener;
use crate::routes::{session, unavailable};
use crate::store::Notification;

/// Notifications read from the store at a time while catching up.
const PAGE: u32 = 200;

/// How a stream is paced (`NOTIFICATIONS_STREAM_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// Live notifications a stream may have waiting before it is cut off.
    pub queue: usize,
    /// Time between keep-alive comments.
    pub heartbeat: Duration,
    /// The reconnection delay advised to clients (`retry:`).
    pub retry: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            queue: 64,
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
        }
    }
}

pub(crate) async fn stream(req: HttpRequest, app: web::Data<App>) -> Result<HttpResponse, Problem> {
    let (user, expires_at) = session(&req, &app)?;
    let until = tokio::time::Instant::now()
        + expires_at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
    let since = match req.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_field",
                        "Last-Event-ID is the id of an event this stream sent",
                    )
                    .with_field("Last-Event-ID")
                })?,
        ),
    };
    // Listening first: whatever commits from here on is either in the
    // store read below or arrives live (or both; `sent` drops the copy).
    let listener = app.live.listen(user, app.streams.queue);
    let sent = match since {
        Some(n) => n,
        None => app
            .store
            .last_seq(user)
            .await
            .map_err(|e| unavailable(&e))?,
    };
    let next_beat = tokio::time::Instant::now() + app.streams.heartbeat;
    let app = app.into_inner();
    let state = Stream {
        closing: app.closing.clone(),
        app,
        user,
        listener,
        sent,
        pending: VecDeque::new(),
        catching_up: since.is_some(),
        opened: false,
        next_beat,
        until,
    };
    let body = futures_util::stream::unfold(state, Stream::next);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        // nginx and the gateway: relay each chunk as it comes.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

struct Stream {
    app: Arc<App>,
    user: i64,
    listener: Listener,
    /// The highest `seq` sent (or, with no `Last-Event-ID`, where the
    /// stream started).
    sent: i64,
    /// Read from the store, to send before anything newer.
    pending: VecDeque<Notification>,
    /// Whether the store may hold notifications after `sent` that are not
    /// in `pending` yet.
    catching_up: bool,
    opened: bool,
    /// When the next keep-alive comment is due. One timer per stream,
    /// for this and for `until`, inline in its state (tokio's `Interval`
    /// would box one more).
    next_beat: tokio::time::Instant,
    closing: CancellationToken,
    /// When the access token expires.
    until: tokio::time::Instant,
}

type Chunk = Result<Bytes, std::io::Error>;

fn event(notification: &Notification) -> Bytes {
    let data = serde_json::to_string(notification).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!(
        "id: {}\nevent: notification\ndata: {data}\n\n",
        notification.seq
    ))
}

impl Stream {
    async fn next(mut self) -> Option<(Chunk, Self)> {
        if !self.opened {
            self.opened = true;
            let hello = format!(
                "retry: {}\n: notifications for user {}\n\n",
                self.app.streams.retry.as_millis(),
                self.user
            );
            return Some((Ok(Bytes::from(hello)), self));
        }
        loop {
            if let Some(notification) = self.pending.pop_front() {
                if notification.seq > self.sent {
                    self.sent = notification.seq;
                    let chunk = event(&notification);
                    return Some((Ok(chunk), self));
                }
                continue;
            }
            if self.catching_up {
                // Boxed: the store call's future is large, and unboxed it
                // would be part of every idle stream's state.
                let page = Box::pin(self.app.store.after(self.user, self.sent, PAGE)).await;
                match page {
                    Ok(page) => {
                        self.catching_up = page.len() == PAGE as usize;
                        self.pending.extend(page);
                        continue;
                    }
                    Err(error) => {
                        // The client reconnects with its Last-Event-ID.
                        tracing::warn!(error = %common::exit::chain(&error), "a stream could not catch up");
                        return None;
                    }
                }
            }
            let wake = self.next_beat.min(self.until);
            tokio::select! {
                biased;
                () = self.closing.cancelled() => return None,
                () = tokio::time::sleep_until(wake) => {
                    if wake >= self.until {
                        return None;
                    }
                    self.next_beat = tokio::time::Instant::now() + self.app.streams.heartbeat;
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), self));
                }
                live = self.listener.recv() => {
                    let notification = live?;
                    if notification.seq <= self.sent {
                        continue;
                    }
                    if notification.seq > self.sent + 1 {
                        // What lies between is committed (numbers are
                        // taken in commit order): read it, this one with it.
                        self.catching_up = true;
                        continue;
                    }
                    self.sent = notification.seq;
                    let chunk = event(&notification);
                    return Some((Ok(chunk), self));
                }
            }
        }
    }
}
