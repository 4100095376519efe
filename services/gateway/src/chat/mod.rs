//! `/api/v1/chat`: the chat service behind the gateway.
//!
//! `GET /api/v1/chat/ws` checks the access token, opens a WebSocket to a
//! chat replica found through discovery (behind the chat breaker, within
//! the upstream timeout) and only then upgrades the client, so a refused or
//! failed upstream is an ordinary problem response. After that, frames are
//! pumped both ways one message at a time: each is forwarded before the
//! next is read, so a slow side slows its own connection down and nothing
//! accumulates in the gateway. Pings and pongs pass through, so chat's
//! heartbeat and idle timeout see the real client. `GET
//! /api/v1/chat/rooms/...` is passed through to chat's REST routes.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::AggregatedMessage;
use awc::ws::{CloseCode, CloseReason, Codec, Frame, Message};
use common::shutdown::CancellationToken;
use futures_util::{SinkExt, StreamExt};

use crate::auth::Session;
use crate::problem::{ApiError, ProblemBody};
use crate::proxy::{self, Passthrough};
use crate::routes::not_allowed;
use crate::upstream::{CallContext, RouteClass, Upstream};

mod schema;
pub use schema::{History, NewRoom, Presence, RoomInfo, RoomList, RoomPath};

/// The chat service's upstream, as app data of the chat scope.
pub struct ChatUpstream(pub Arc<Upstream>);

/// Cancelled when the gateway starts draining: relayed WebSockets close
/// with 1001 so clients reconnect through another gateway replica.
#[derive(Clone)]
pub struct Closing(pub CancellationToken);

/// Bounds on relayed WebSockets (`GATEWAY_MAX_WEBSOCKETS`,
/// `GATEWAY_WS_QUEUE`, `GATEWAY_WS_SEND_TIMEOUT`).
#[derive(Clone)]
pub struct WsLimits {
    /// Sockets relayed at once; beyond it upgrades are refused with 503.
    pub open: Arc<tokio::sync::Semaphore>,
    /// Frames from chat waiting for a client that reads slowly.
    pub queue: usize,
    /// How long one frame may take to reach the client.
    pub send_timeout: std::time::Duration,
    /// Largest message relayed either way.
    pub max_frame: usize,
}

impl WsLimits {
    pub fn new(
        max_sockets: usize,
        queue: usize,
        send_timeout: std::time::Duration,
        max_frame: usize,
    ) -> Self {
        Self {
            open: Arc::new(tokio::sync::Semaphore::new(max_sockets)),
            queue: queue.max(1),
            send_timeout,
            max_frame,
        }
    }
}

pub fn configure(
    cfg: &mut web::ServiceConfig,
    upstream: Arc<Upstream>,
    closing: Closing,
    ws_limits: WsLimits,
) {
    cfg.service(
        web::scope("/api/v1/chat")
            .app_data(web::Data::new(ChatUpstream(upstream)))
            .app_data(web::Data::new(ws_limits))
            .app_data(web::Data::new(closing))
            .wrap(actix_web::middleware::from_fn(crate::ratelimit::limit_rate))
            .wrap(actix_web::middleware::from_fn(crate::request::request_id))
            .wrap(actix_web::middleware::from_fn(crate::cors::cors))
            .route("/ws", web::get().to(ws))
            .route("/ws", not_allowed("GET"))
            .route("/rooms", web::get().to(rooms))
            .route("/rooms", web::post().to(create_room))
            .route("/rooms", not_allowed("GET, POST"))
            .route("/rooms/{room}", web::get().to(room))
            .route("/rooms/{room}", not_allowed("GET"))
            .route("/rooms/{room}/presence", web::get().to(presence))
            .route("/rooms/{room}/presence", not_allowed("GET"))
            .route("/rooms/{room}/history", web::get().to(history))
            .route("/rooms/{room}/history", not_allowed("GET")),
    );
}

/// Rooms with members on the chat replica that answers.
#[utoipa::path(get, path = "/api/v1/chat/rooms", tag = "chat",
    security(("bearer" = [])),
    responses((status = 200, body = RoomList)))]
pub async fn rooms(
    // Checked here, revocation included: chat checks only the signature.
    _signed_in: Session,
    req: HttpRequest,
    ctx: CallContext,
    pass: web::Data<Passthrough>,
    chat: web::Data<ChatUpstream>,
) -> Result<HttpResponse, ApiError> {
    rest(req, ctx, pass, chat).await
}

/// Claims a room name: public, or private with its members (user ids;
/// the creator is always one). Only members may join a private room or
/// read its history and presence.
#[utoipa::path(post, path = "/api/v1/chat/rooms", tag = "chat",
    security(("bearer" = [])), params(crate::routes::IdempotencyKeyParam),
    request_body(content = NewRoom, content_type = "application/json"),
    responses((status = 201, body = RoomInfo, description = "created; `Location` names it"),
        (status = 422, body = ProblemBody, description = "`idempotency_key_reused`"),
        (status = 409, body = ProblemBody, description = "`room_exists`: claimed, or in use as a public room"), (status = 507, body = ProblemBody)))]
pub async fn create_room(
    _signed_in: Session,
    // Checked here; chat keeps the key with the room it creates, scoped to
    // the caller, where every chat replica sees it.
    _key: crate::request::IdempotencyHeader,
    req: HttpRequest,
    body: web::Bytes,
    ctx: CallContext,
    pass: web::Data<Passthrough>,
    chat: web::Data<ChatUpstream>,
) -> Result<HttpResponse, ApiError> {
    proxy::forward_to(&req, "/rooms", body, &ctx, &pass, &chat.0).await
}

/// Who may enter a room.
#[utoipa::path(get, path = "/api/v1/chat/rooms/{room}", tag = "chat",
    security(("bearer" = [])), params(RoomPath),
    responses((status = 200, body = RoomInfo),
        (status = 403, body = ProblemBody, description = "`forbidden`: a private room you are not in")))]
pub async fn room(
    _signed_in: Session,
    req: HttpRequest,
    ctx: CallContext,
    pass: web::Data<Passthrough>,
    chat: web::Data<ChatUpstream>,
) -> Result<HttpResponse, ApiError> {
    rest(req, ctx, pass, chat).await
}

/// Who is in a room now, on every chat replica.
#[utoipa::path(get, path = "/api/v1/chat/rooms/{room}/presence", tag = "chat",
    security(("bearer" = [])), params(RoomPath),
    responses((status = 200, body = Presence), (status = 403, body = ProblemBody)))]
pub async fn presence(
    _signed_in: Session,
    req: HttpRequest,
    ctx: CallContext,
    pass: web::Data<Passthrough>,
    chat: web::Data<ChatUpstream>,
) -> Result<HttpResponse, ApiError> {
    rest(req, ctx, pass, chat).await
}

/// A room's recent messages, oldest first.
#[utoipa::path(get, path = "/api/v1/chat/rooms/{room}/history", tag = "chat",
    security(("bearer" = [])), params(RoomPath, ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
        description = "messages, newest last; 50 when absent")),
    responses((status = 200, body = History), (status = 403, body = ProblemBody)))]
pub async fn history(
    _signed_in: Session,
    req: HttpRequest,
    ctx: CallContext,
    pass: web::Data<Passthrough>,
    chat: web::Data<ChatUpstream>,
) -> Result<HttpResponse, ApiError> {
    rest(req, ctx, pass, chat).await
}

/// `GET /api/v1/chat/rooms...` → chat's `GET /rooms...`.
async fn rest(
    req: HttpRequest,
    ctx: CallContext,
    pass: web::Data<Passthrough>,
    chat: web::Data<ChatUpstream>,
) -> Result<HttpResponse, ApiError> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = path.strip_prefix("/api/v1/chat").unwrap_or(path).to_owned();
    proxy::forward_to(&req, &target, web::Bytes::new(), &ctx, &pass, &chat.0).await
}

/// Upgrades to a WebSocket speaking chat's protocol (see the README),
/// relayed to a chat replica.
#[utoipa::path(get, path = "/api/v1/chat/ws", tag = "chat",
    security(("bearer" = []), ("ticket" = [])),
    params(
        ("Upgrade" = String, Header, pattern = "^websocket$"),
        ("Connection" = String, Header, pattern = "^[Uu]pgrade$"),
        ("Sec-WebSocket-Version" = String, Header, pattern = "^13$"),
        // 16 random bytes in base64 (RFC 6455 §4.1).
        ("Sec-WebSocket-Key" = String, Header, pattern = "^[A-Za-z0-9+/]{21}[AQgw]==$"),
    ),
    responses((status = 101, description = "switching to the WebSocket protocol")))]
pub async fn ws(
    req: HttpRequest,
    body: web::Payload,
    ctx: CallContext,
    pass: web::Data<Passthrough>,
    chat: web::Data<ChatUpstream>,
    closing: web::Data<Closing>,
    limits: web::Data<WsLimits>,
) -> Result<HttpResponse, ApiError> {
    let token = crate::auth::token_or_ticket(&req).await?;
    let Ok(slot) = limits.open.clone().try_acquire_owned() else {
        metrics::counter!("gateway_websockets_refused_total").increment(1);
        return Err(ApiError::Unavailable {
            service: "chat".into(),
            retry_after: std::time::Duration::from_secs(1),
        });
    };
    let upstream = &chat.0;
    let max_frame = limits.max_frame;
    // Validates the upgrade before anything is asked of chat.
    let (response, session, client) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest {
            code: "websocket_upgrade_required",
            detail: e.to_string(),
            field: None,
        })?;
    let upstream_socket = connect(&req, &token, &ctx, &pass, upstream, max_frame).await?;
    let closing = closing.0.clone();
    let limits = limits.get_ref().clone();
    actix_web::rt::spawn(async move {
        pump(
            session,
            client,
            upstream_socket,
            max_frame,
            closing,
            &limits,
        )
        .await;
        drop(slot);
    });
    Ok(response)
}

type Socket = actix_codec::Framed<awc::BoxedSocket, Codec>;

/// Opens the WebSocket to a chat replica, counting the outcome against
/// chat's breaker.
async fn connect(
    req: &HttpRequest,
    token: &str,
    ctx: &CallContext,
    pass: &Passthrough,
    upstream: &Upstream,
    max_frame: usize,
) -> Result<Socket, ApiError> {
    let service = upstream.service();
    let (permit, authority) = proxy::admit(upstream, RouteClass::Read)?;
    let mut request = pass
        .client()
        .ws(format!("ws://{authority}/ws"))
        .max_frame_size(max_frame)
        .bearer_auth(token);
    let mut headers = Vec::new();
    proxy::hop_headers(req, ctx, |name, value| headers.push((name, value)));
    for (name, value) in headers {
        request = request.set_header(name, value);
    }
    let connected = tokio::time::timeout(upstream.timeout(), request.connect()).await;
    let result = match connected {
        Ok(Ok((_, socket))) => Ok(socket),
        Ok(Err(awc::error::WsClientError::InvalidResponseStatus(status))) => {
            // Chat refused this client (its token, its connection cap): an
            // answer about the request, not a sick upstream.
            Err(match status.as_u16() {
                401 => ApiError::Unauthorized("chat refused the access token".into()),
                429 => ApiError::TooManyRequests {
                    retry_after: Duration::from_secs(1),
                },
                s if s >= 500 => ApiError::BadGateway {
                    service: service.clone(),
                },
                _ => ApiError::BadRequest {
                    code: "websocket_refused",
                    detail: format!("chat answered the upgrade with {status}"),
                    field: None,
                },
            })
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "chat WebSocket connect failed");
            Err(ApiError::Unavailable {
                service: service.clone(),
                retry_after: Duration::from_secs(1),
            })
        }
        Err(_) => Err(ApiError::Timeout {
            service: service.clone(),
        }),
    };
    let healthy = !matches!(
        result,
        Err(ApiError::Unavailable { .. } | ApiError::Timeout { .. } | ApiError::BadGateway { .. })
    );
    upstream.breaker(RouteClass::Read).record(permit, healthy);
    if !healthy {
        metrics::counter!("gateway_upstream_failures_total", "upstream" => service.clone())
            .increment(1);
    }
    result
}

/// Why the pump stopped, and what to tell the side still open.
enum End {
    /// The client said goodbye (or went away): tell chat.
    Client(Option<CloseReason>),
    /// Chat closed: tell the client.
    Upstream(Option<CloseReason>),
    /// The gateway is going away: tell both.
    Both(CloseReason),
    /// The client does not read what chat sends fast enough: chat is told
    /// it went away, the client gets 1008 if it can still be reached.
    Slow,
}

/// A frame for the client, queued for its writer.
enum Outgoing {
    Text(bytestring::ByteString),
    Binary(actix_web::web::Bytes),
    Ping(actix_web::web::Bytes),
    Pong(actix_web::web::Bytes),
}

/// The one task that writes to a client: each frame gets `timeout` to be
/// taken; a client that takes longer has stopped reading. Returns when the
/// queue closes (true) or the client failed to keep up (false).
async fn write_to_client(
    mut session: actix_ws::Session,
    mut queue: tokio::sync::mpsc::Receiver<Outgoing>,
    timeout: std::time::Duration,
) -> bool {
    while let Some(frame) = queue.recv().await {
        let sent = tokio::time::timeout(timeout, async {
            match frame {
                Outgoing::Text(text) => session.text(text).await,
                Outgoing::Binary(bytes) => session.binary(bytes).await,
                Outgoing::Ping(bytes) => session.ping(&bytes).await,
                Outgoing::Pong(bytes) => session.pong(&bytes).await,
            }
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => return false,
            Err(_elapsed) => return false,
        }
    }
    true
}

/// The one task that writes to chat; ends when the queue closes (true) or
/// chat stops taking frames within `timeout` (false).
async fn write_to_chat(
    mut sink: futures_util::stream::SplitSink<Socket, Message>,
    mut queue: tokio::sync::mpsc::Receiver<Message>,
    timeout: std::time::Duration,
) -> bool {
    while let Some(message) = queue.recv().await {
        if !matches!(
            tokio::time::timeout(timeout, sink.send(message)).await,
            Ok(Ok(()))
        ) {
            return false;
        }
    }
    true
}

/// Relays frames until either side closes, then closes the other.
///
/// Each direction has its own writer task behind a bounded queue, and the
/// loop never awaits a write: it waits for queue room inside the same
/// `select!` as everything else, so it keeps reading both sides (a relay
/// blocked writing one way while its peer is blocked writing the other
/// would deadlock), sees the drain signal at once, and gives a client that
/// lets a frame wait longer than the send timeout the close it earned.
async fn pump(
    session: actix_ws::Session,
    client: actix_ws::MessageStream,
    upstream: Socket,
    max_frame: usize,
    closing: CancellationToken,
    limits: &WsLimits,
) {
    let _open = OpenGauge::new();
    let timeout = limits.send_timeout;
    let (to_client, client_frames) = tokio::sync::mpsc::channel(limits.queue);
    let mut client_writer =
        actix_web::rt::spawn(write_to_client(session.clone(), client_frames, timeout));
    let (to_chat_sink, mut from_chat) = upstream.split();
    let (to_chat, chat_frames) = tokio::sync::mpsc::channel(limits.queue);
    let mut chat_writer = actix_web::rt::spawn(write_to_chat(to_chat_sink, chat_frames, timeout));
    let mut client = client
        .max_frame_size(max_frame)
        .aggregate_continuations()
        .max_continuation_size(max_frame);
    // A frame read from one side that its writer has no room for yet.
    let mut for_chat: Option<Message> = None;
    let mut for_client: Option<(Outgoing, tokio::time::Instant)> = None;
    // Set once a writer's handle has completed inside the loop: a finished
    // JoinHandle must not be polled again.
    let (mut client_writer_done, mut chat_writer_done) = (false, false);
    let end = loop {
        let deadline = for_client
            .as_ref()
            .map_or_else(|| tokio::time::Instant::now() + timeout, |(_, at)| *at);
        tokio::select! {
            _ = &mut client_writer => {
                client_writer_done = true;
                break End::Slow;
            }
            _ = &mut chat_writer => {
                chat_writer_done = true;
                break End::Upstream(Some(CloseReason {
                    code: CloseCode::Away,
                    description: Some("chat stopped taking messages".into()),
                }));
            }
            () = closing.cancelled() => break End::Both(CloseReason {
                code: CloseCode::Away,
                description: Some("gateway shutting down; reconnect".into()),
            }),
            room = to_chat.reserve(), if for_chat.is_some() => match (room, for_chat.take()) {
                (Ok(room), Some(message)) => room.send(message),
                _ => break End::Upstream(Some(CloseCode::Away.into())),
            },
            room = to_client.reserve(), if for_client.is_some() => match (room, for_client.take()) {
                (Ok(room), Some((frame, _))) => room.send(frame),
                _ => break End::Slow,
            },
            () = tokio::time::sleep_until(deadline), if for_client.is_some() => break End::Slow,
            incoming = client.recv(), if for_chat.is_none() => {
                for_chat = Some(match incoming {
                    Some(Ok(AggregatedMessage::Text(text))) => Message::Text(text),
                    Some(Ok(AggregatedMessage::Binary(bytes))) => Message::Binary(bytes),
                    Some(Ok(AggregatedMessage::Ping(bytes))) => Message::Ping(bytes),
                    Some(Ok(AggregatedMessage::Pong(bytes))) => Message::Pong(bytes),
                    Some(Ok(AggregatedMessage::Close(reason))) => break End::Client(reason),
                    Some(Err(actix_ws::ProtocolError::Overflow)) => {
                        break End::Upstream(Some(CloseReason {
                            code: CloseCode::Size,
                            description: Some(format!("messages are limited to {max_frame} bytes")),
                        }));
                    }
                    Some(Err(_)) => break End::Upstream(Some(CloseCode::Protocol.into())),
                    None => break End::Client(Some(CloseCode::Away.into())),
                });
            }
            frame = from_chat.next(), if for_client.is_none() => {
                let outgoing = match frame {
                    Some(Ok(Frame::Text(bytes))) => match bytestring::ByteString::try_from(bytes) {
                        Ok(text) => Outgoing::Text(text),
                        Err(_) => break End::Client(Some(CloseCode::Invalid.into())),
                    },
                    Some(Ok(Frame::Binary(bytes))) => Outgoing::Binary(bytes),
                    Some(Ok(Frame::Ping(bytes))) => Outgoing::Ping(bytes),
                    Some(Ok(Frame::Pong(bytes))) => Outgoing::Pong(bytes),
                    Some(Ok(Frame::Close(reason))) => break End::Upstream(reason),
                    // Chat sends whole messages; a fragmented one is a
                    // protocol error here rather than something to buffer.
                    Some(Ok(Frame::Continuation(_))) | Some(Err(_)) => {
                        break End::Upstream(Some(CloseReason {
                            code: CloseCode::Error,
                            description: Some("chat connection failed".into()),
                        }));
                    }
                    None => break End::Upstream(Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("chat went away".into()),
                    })),
                };
                for_client = Some((outgoing, tokio::time::Instant::now() + timeout));
            }
        }
    };
    // What is queued goes out before the closes, each within the send
    // timeout; a writer that cannot finish is dropped.
    let (chat_reason, client_reason) = match end {
        End::Client(reason) => (reason.clone(), reason),
        End::Upstream(reason) => (None, reason),
        End::Both(reason) => (Some(reason.clone()), Some(reason)),
        End::Slow => {
            metrics::counter!("gateway_websockets_closed_slow_total").increment(1);
            (
                Some(CloseCode::Away.into()),
                Some(CloseReason {
                    code: CloseCode::Policy,
                    description: Some("the client does not read fast enough".into()),
                }),
            )
        }
    };
    let _ = tokio::time::timeout(timeout, to_chat.send(Message::Close(chat_reason))).await;
    drop((to_chat, to_client));
    if !chat_writer_done
        && !matches!(
            tokio::time::timeout(timeout, &mut chat_writer).await,
            Ok(Ok(true))
        )
    {
        chat_writer.abort();
    }
    if !client_writer_done
        && !matches!(
            tokio::time::timeout(timeout, &mut client_writer).await,
            Ok(Ok(true))
        )
    {
        client_writer.abort();
    }
    let _ = tokio::time::timeout(timeout, session.close(client_reason)).await;
}

/// `gateway_websockets_open`, kept right however the pump ends.
struct OpenGauge;

impl OpenGauge {
    fn new() -> Self {
        metrics::gauge!("gateway_websockets_open").increment(1.0);
        Self
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        metrics::gauge!("gateway_websockets_open").decrement(1.0);
    }
}
