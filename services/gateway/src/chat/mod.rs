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

use crate::auth::{Authenticator, Session};
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

/// Largest WebSocket message relayed, either way.
pub struct MaxFrame(pub usize);

pub fn configure(
    cfg: &mut web::ServiceConfig,
    upstream: Arc<Upstream>,
    max_frame: usize,
    closing: Closing,
) {
    cfg.service(
        web::scope("/api/v1/chat")
            .app_data(web::Data::new(ChatUpstream(upstream)))
            .app_data(web::Data::new(closing))
            .app_data(web::Data::new(MaxFrame(max_frame)))
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
    security(("bearer" = [])), request_body(content = NewRoom, content_type = "application/json"),
    responses((status = 201, body = RoomInfo, description = "created; `Location` names it"),
        (status = 409, body = ProblemBody, description = "`room_exists`: claimed, or in use as a public room"), (status = 507, body = ProblemBody)))]
pub async fn create_room(
    _signed_in: Session,
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
    max_frame: web::Data<MaxFrame>,
    closing: web::Data<Closing>,
) -> Result<HttpResponse, ApiError> {
    let token = ws_token(&req).await?;
    let upstream = &chat.0;
    let max_frame = max_frame.0;
    // Validates the upgrade before anything is asked of chat.
    let (response, session, client) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest {
            code: "websocket_upgrade_required",
            detail: e.to_string(),
            field: None,
        })?;
    let upstream_socket = connect(&req, &token, &ctx, &pass, upstream, max_frame).await?;
    let closing = closing.0.clone();
    actix_web::rt::spawn(pump(session, client, upstream_socket, max_frame, closing));
    Ok(response)
}

#[derive(serde::Deserialize)]
struct WsQuery {
    ticket: Option<String>,
    access_token: Option<String>,
}

/// The checked access token of an upgrade: from `Authorization: Bearer`,
/// or from a single-use `?ticket=` (browsers). A token in the URL is
/// refused: URLs end up in logs, proxies' histories and `Referer`s.
async fn ws_token(req: &HttpRequest) -> Result<String, ApiError> {
    let auth = req
        .app_data::<web::Data<Authenticator>>()
        .ok_or_else(|| ApiError::Unauthorized("authentication is not configured".into()))?;
    if let Some(header) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let token = header
            .to_str()
            .ok()
            .and_then(common::auth::bearer)
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".into())
            })?;
        auth.check(token).await?;
        return Ok(token.to_owned());
    }
    let query = web::Query::<WsQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or(WsQuery {
            ticket: None,
            access_token: None,
        });
    match query {
        WsQuery {
            ticket: Some(ticket),
            ..
        } => Ok(auth.redeem(&ticket).await?.0),
        WsQuery {
            access_token: Some(_),
            ..
        } => Err(ApiError::Unauthorized(
            "access tokens are not accepted in URLs: exchange one for a ticket \
             (POST /api/v1/auth/ticket) and pass ?ticket="
                .into(),
        )),
        _ => Err(ApiError::Unauthorized(
            "an access token is required (Authorization: Bearer, or ?ticket= from \
             POST /api/v1/auth/ticket)"
                .into(),
        )),
    }
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
}

/// Relays frames until either side closes, then closes the other.
async fn pump(
    mut session: actix_ws::Session,
    client: actix_ws::MessageStream,
    upstream: Socket,
    max_frame: usize,
    closing: CancellationToken,
) {
    let _open = OpenGauge::new();
    let (mut to_chat, mut from_chat) = upstream.split();
    let mut client = client
        .max_frame_size(max_frame)
        .aggregate_continuations()
        .max_continuation_size(max_frame);
    let end = loop {
        tokio::select! {
            () = closing.cancelled() => break End::Both(CloseReason {
                code: CloseCode::Away,
                description: Some("gateway shutting down; reconnect".into()),
            }),
            incoming = client.recv() => {
                let message = match incoming {
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
                };
                if to_chat.send(message).await.is_err() {
                    break End::Upstream(Some(CloseCode::Away.into()));
                }
            }
            frame = from_chat.next() => {
                let sent = match frame {
                    Some(Ok(Frame::Text(bytes))) => match bytestring::ByteString::try_from(bytes) {
                        Ok(text) => session.text(text).await,
                        Err(_) => break End::Client(Some(CloseCode::Invalid.into())),
                    },
                    Some(Ok(Frame::Binary(bytes))) => session.binary(bytes).await,
                    Some(Ok(Frame::Ping(bytes))) => session.ping(&bytes).await,
                    Some(Ok(Frame::Pong(bytes))) => session.pong(&bytes).await,
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
                if sent.is_err() {
                    break End::Client(Some(CloseCode::Away.into()));
                }
            }
        }
    };
    match end {
        End::Client(reason) => {
            let _ = to_chat.send(Message::Close(reason.clone())).await;
            let _ = session.close(reason).await;
        }
        End::Upstream(reason) => {
            let _ = session.close(reason).await;
            let _ = to_chat.send(Message::Close(None)).await;
        }
        End::Both(reason) => {
            let _ = to_chat.send(Message::Close(Some(reason.clone()))).await;
            let _ = session.close(Some(reason)).await;
        }
    }
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
