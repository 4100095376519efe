//! One WebSocket connection: reads client frames, writes what the hub
//! queued for it, pings, and closes it when it idles, floods or falls
//! behind.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_ws::{CloseCode, CloseReason, ProtocolError};

use crate::broker::Draft;
use crate::hub::{End, Frame, Next as Outgoing, Registration, SLOW_CONSUMER};
use crate::protocol::{ClientFrame, PresenceAction, ROOM_RULES, ServerFrame, mentions, valid_room};
use crate::{Chat, Limits};

/// Close code for a connection that sent nothing for too long.
pub const IDLE: u16 = 4000;

/// Close code for a connection whose access token expired: the client
/// reconnects with a fresh token (after refreshing it).
pub const TOKEN_EXPIRED: u16 = 4001;

/// Messages per second with a burst, per connection.
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
    /// Frames refused since the last one let through.
    refused: u32,
}

impl Bucket {
    fn new(limits: &Limits) -> Self {
        let burst = f64::from(limits.message_burst.max(1));
        Self {
            tokens: burst,
            last: Instant::now(),
            rate: f64::from(limits.messages_per_second.max(1)),
            burst,
            refused: 0,
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

fn error(code: &str, message: &str, room: Option<&str>) -> String {
    ServerFrame::Error {
        code,
        message,
        room,
    }
    .to_text()
}

/// What the client loop does after a frame.
enum Next {
    Continue,
    Close(CloseReason),
}

pub async fn run(
    chat: Arc<Chat>,
    mut reg: Registration,
    mut session: actix_ws::Session,
    stream: actix_ws::MessageStream,
    token_expires_at: SystemTime,
) {
    // A socket lives no longer than the token that opened it.
    let expired = tokio::time::sleep(
        token_expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    );
    tokio::pin!(expired);
    let limits = chat.limits.clone();
    // Every write to the client is bounded: one that stopped reading is
    // closed (4008) rather than holding this loop, which must keep seeing
    // the drain signal, its token's expiry and its queue.
    let send_timeout = limits.send_timeout;
    let mut stream = stream
        .max_frame_size(limits.max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(limits.max_frame_bytes);
    let mut bucket = Bucket::new(&limits);
    let reason = |end: End| match end {
        End::TooSlow => CloseReason {
            code: CloseCode::Other(SLOW_CONSUMER),
            description: Some("too slow: messages were not read in time".into()),
        },
        End::ShuttingDown => CloseReason {
            code: CloseCode::Away,
            description: Some("server shutting down; reconnect".into()),
        },
        End::Idle => CloseReason {
            code: CloseCode::Other(IDLE),
            description: Some("idle timeout".into()),
        },
    };

    let close = loop {
        tokio::select! {
            biased;
            () = &mut expired => break Some(CloseReason {
                code: CloseCode::Other(TOKEN_EXPIRED),
                description: Some("token expired; reconnect with a fresh token".into()),
            }),
            next = reg.outbound.next() => match next {
                Outgoing::End(end) => break Some(reason(end)),
                Outgoing::Ping => {
                    if !delivered(tokio::time::timeout(send_timeout, session.ping(b"")).await) {
                        break Some(reason(End::TooSlow));
                    }
                }
                Outgoing::Frame(frame) => tokio::select! {
                    sent = tokio::time::timeout(send_timeout, session.text(frame)) => {
                        if !delivered(sent) { break Some(reason(End::TooSlow)) }
                    }
                    end = reg.outbound.ended() => break Some(reason(end)),
                },
            },
            incoming = stream.recv() => {
                reg.seen();
                let message = match incoming {
                    None => break None,
                    Some(Err(ProtocolError::Overflow)) => break Some(CloseReason {
                        code: CloseCode::Size,
                        description: Some(format!("frames are limited to {} bytes", limits.max_frame_bytes)),
                    }),
                    Some(Err(_)) => break Some(CloseCode::Protocol.into()),
                    Some(Ok(message)) => message,
                };
                match message {
                    actix_ws::AggregatedMessage::Text(text) => {
                        // Boxed: an idle connection's task then holds no
                        // room for the (large, rarely live) handler state.
                        match Box::pin(handle(&chat, &reg, &mut session, &mut bucket, &text)).await {
                            Next::Continue => {}
                            Next::Close(reason) => break Some(reason),
                        }
                    }
                    actix_ws::AggregatedMessage::Binary(_) => {
                        let answer = error("unsupported", "frames are JSON text", None);
                        if !reply(&mut session, answer, send_timeout).await { break Some(reason(End::TooSlow)) }
                    }
                    actix_ws::AggregatedMessage::Ping(bytes) => {
                        if !delivered(tokio::time::timeout(send_timeout, session.pong(&bytes)).await) {
                            break Some(reason(End::TooSlow));
                        }
                    }
                    actix_ws::AggregatedMessage::Pong(_) => {}
                    actix_ws::AggregatedMessage::Close(_) => break Some(CloseCode::Normal.into()),
                }
            }
        }
    };
    // Boxed like the handler: it runs once, at the end.
    Box::pin(async move {
        for room in chat.hub.rooms_of(reg.id) {
            leave(&chat, &reg, &room).await;
        }
        // A client that stopped reading cannot take the close either.
        let _ = tokio::time::timeout(send_timeout, session.close(close)).await;
    })
    .await;
}

/// Writes one frame; false when the connection is gone or the client did
/// not take it within `CHAT_SEND_TIMEOUT` (it stopped reading).
async fn reply(session: &mut actix_ws::Session, text: String, within: Duration) -> bool {
    delivered(tokio::time::timeout(within, session.text(text)).await)
}

/// Whether a write bounded by a timeout went out.
fn delivered(outcome: Result<Result<(), actix_ws::Closed>, tokio::time::error::Elapsed>) -> bool {
    match outcome {
        Ok(sent) => sent.is_ok(),
        Err(_) => {
            metrics::counter!("chat_send_timeouts_total").increment(1);
            false
        }
    }
}

async fn handle(
    chat: &Chat,
    reg: &Registration,
    session: &mut actix_ws::Session,
    bucket: &mut Bucket,
    text: &str,
) -> Next {
    let frame: ClientFrame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(e) => {
            let sent = reply(
                session,
                error("bad_frame", &e.to_string(), None),
                chat.limits.send_timeout,
            )
            .await;
            return if sent {
                Next::Continue
            } else {
                Next::Close(CloseCode::Normal.into())
            };
        }
    };
    if !bucket.take() {
        metrics::counter!("chat_rate_limited_total").increment(1);
        // A client that ignores `rate_limited` for a whole burst is not
        // slowing down; it goes.
        if bucket.refused > chat.limits.message_burst.max(1) {
            return Next::Close(CloseReason {
                code: CloseCode::Policy,
                description: Some("flooding: frames kept coming after rate_limited".into()),
            });
        }
        let sent = reply(
            session,
            error("rate_limited", "too many frames; slow down", None),
            chat.limits.send_timeout,
        )
        .await;
        return if sent {
            Next::Continue
        } else {
            Next::Close(CloseCode::Normal.into())
        };
    }
    let answer = match frame {
        ClientFrame::Join { room, since } => join(chat, reg, &room, since.as_ref()).await,
        ClientFrame::Leave { room } => {
            if leave(chat, reg, &room).await {
                ServerFrame::Left { room: &room }.to_text()
            } else {
                error("not_joined", "you are not in this room", Some(&room))
            }
        }
        ClientFrame::Send {
            room,
            content,
            client_id,
        } => send(chat, reg, &room, content, client_id.as_deref()).await,
        ClientFrame::Typing { room } => {
            if chat.hub.in_room(&room, reg.id) {
                let frame = ServerFrame::Typing {
                    room: &room,
                    user: &reg.member,
                }
                .to_text();
                if let Err(e) = chat.broker.broadcast(&room, Frame::from(frame)).await {
                    tracing::warn!(error = %common::exit::chain(&e), "typing not delivered");
                }
                return Next::Continue;
            }
            error("not_joined", "join the room first", Some(&room))
        }
    };
    if reply(session, answer, chat.limits.send_timeout).await {
        Next::Continue
    } else {
        Next::Close(CloseCode::Normal.into())
    }
}

async fn join(
    chat: &Chat,
    reg: &Registration,
    room: &str,
    since: Option<&crate::protocol::Position>,
) -> String {
    if !valid_room(room) {
        return error("bad_room", ROOM_RULES, None);
    }
    // Checked on every join, so a rule read once can never go stale in a
    // long-lived connection; the store failing refuses (closed).
    match chat.broker.room_access(room).await {
        Ok(Some(access)) if !access.admits(reg.member.id) => {
            return error(
                "forbidden",
                "this room is private and you are not a member",
                Some(room),
            );
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %common::exit::chain(&e), room, "cannot read the room's access");
            return error("unavailable", "the room is unavailable", Some(room));
        }
    }
    if !chat.hub.in_room(room, reg.id)
        && chat.hub.room_count(reg.id) >= chat.limits.max_rooms_per_connection
    {
        return error(
            "too_many_rooms",
            "leave a room before joining another",
            Some(room),
        );
    }
    let user_was_here = chat.hub.user_in_room(room, reg.member.id, reg.id);
    let (added, first) = chat.hub.join(room, reg.id);
    if first && let Err(e) = chat.broker.watch(room).await {
        tracing::warn!(error = %common::exit::chain(&e), room, "cannot receive the room's traffic");
    }
    let arrived = added && !user_was_here && set_presence(chat, room, &reg.member, true).await;
    let members = chat.broker.presence_count(room).await.unwrap_or(0);
    let large = members > chat.limits.large_room;
    let presence = if large {
        Vec::new()
    } else {
        chat.broker.presence(room).await.unwrap_or_default()
    };
    if arrived && !large {
        announce(chat, room, &reg.member, PresenceAction::Join).await;
    }
    let recovery = match chat
        .broker
        .recover(room, since, chat.limits.recovery_limit)
        .await
    {
        Ok(recovery) => recovery,
        Err(e) => {
            tracing::warn!(error = %common::exit::chain(&e), room, "recovery failed");
            return error(
                "unavailable",
                "the room's history is unavailable",
                Some(room),
            );
        }
    };
    ServerFrame::Joined {
        room,
        position: recovery.position,
        recovered: recovery.recovered,
        missed: &recovery.missed,
        members: members.max(presence.len()),
        presence: &presence,
    }
    .to_text()
}

/// Takes the connection out of `room`; true when it was in it.
async fn leave(chat: &Chat, reg: &Registration, room: &str) -> bool {
    let (removed, empty) = chat.hub.leave(room, reg.id);
    if !removed {
        return false;
    }
    if !chat.hub.user_in_room(room, reg.member.id, reg.id)
        && set_presence(chat, room, &reg.member, false).await
    {
        // Counted without the leaver: a room that was just large
        // announces nothing.
        let remaining = chat.broker.presence_count(room).await.unwrap_or(0);
        if remaining < chat.limits.large_room {
            announce(chat, room, &reg.member, PresenceAction::Leave).await;
        }
    }
    if empty && let Err(e) = chat.broker.unwatch(room).await {
        tracing::warn!(error = %common::exit::chain(&e), room, "cannot stop receiving the room");
    }
    true
}

/// Records the user's presence; true when the room's presence changed
/// (or it is unknown because the store failed: better a repeated
/// announcement than a missing one).
async fn set_presence(
    chat: &Chat,
    room: &str,
    member: &crate::protocol::Member,
    present: bool,
) -> bool {
    match chat.broker.set_presence(room, member, present).await {
        Ok(changed) => changed,
        Err(e) => {
            tracing::warn!(error = %common::exit::chain(&e), room, "presence change not stored");
            true
        }
    }
}

async fn announce(
    chat: &Chat,
    room: &str,
    member: &crate::protocol::Member,
    action: PresenceAction,
) {
    let frame = ServerFrame::Presence {
        room,
        user: member,
        action,
    }
    .to_text();
    if let Err(e) = chat.broker.broadcast(room, Frame::from(frame)).await {
        tracing::warn!(error = %common::exit::chain(&e), room, "presence change not shared");
    }
}

async fn send(
    chat: &Chat,
    reg: &Registration,
    room: &str,
    content: String,
    client_id: Option<&str>,
) -> String {
    if !chat.hub.in_room(room, reg.id) {
        return error("not_joined", "join the room first", Some(room));
    }
    let length = content.chars().count();
    if content.trim().is_empty() || length > chat.limits.max_message_chars {
        let why = format!(
            "messages are 1 to {} characters",
            chat.limits.max_message_chars
        );
        return error("bad_message", &why, Some(room));
    }
    if client_id.is_some_and(|id| id.len() > 64) {
        return error("bad_message", "client_id is at most 64 bytes", Some(room));
    }
    metrics::counter!("chat_messages_in_total").increment(1);
    let draft = Draft {
        user: reg.member.clone(),
        mentions: mentions(&content, chat.limits.max_mentions),
        content,
    };
    match chat.broker.publish(room, draft).await {
        Ok(message) => {
            chat.events.posted(&message);
            ServerFrame::Ack {
                room,
                client_id,
                id: &message.id,
                offset: message.offset,
            }
            .to_text()
        }
        Err(e) => {
            tracing::warn!(error = %common::exit::chain(&e), room, "message not published");
            error(
                "unavailable",
                "the message could not be delivered; retry",
                Some(room),
            )
        }
    }
}
