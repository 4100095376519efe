//! HTTP: the WebSocket upgrade and REST for presence and history. Every
//! route needs the gateway's access token as `Authorization: Bearer`;
//! browsers, which cannot set headers on an upgrade, come through the
//! gateway with a single-use ticket, which the gateway exchanges for the
//! header. A token in the URL is never accepted.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use common::problem::Problem;
use serde::Deserialize;
use serde_json::json;

use crate::Chat;
use crate::protocol::{Member, ROOM_RULES, valid_room};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws", web::get().to(upgrade))
        .route("/rooms", web::get().to(rooms))
        .route("/rooms/{room}/presence", web::get().to(presence))
        .route("/rooms/{room}/history", web::get().to(history));
}

/// The caller named by a valid access token, and when that token expires.
fn authenticate(chat: &Chat, req: &HttpRequest) -> Result<(Member, SystemTime), Problem> {
    let unauthorized = |why: &str| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", why);
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(common::auth::bearer)
        .ok_or_else(|| unauthorized("an Authorization: Bearer access token is required"))?;
    // One answer for every refusal; the reason is for the logs.
    let claims = chat.signer.verify(token).map_err(|why| {
        tracing::debug!(reason = %why, "refused an access token");
        unauthorized("the access token is invalid or expired")
    })?;
    let id = claims
        .user_id()
        .ok_or_else(|| unauthorized("the access token is invalid or expired"))?;
    let expires_at = claims.expires_at();
    Ok((
        Member {
            id,
            name: claims.name,
        },
        expires_at,
    ))
}

async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    chat: web::Data<Chat>,
) -> Result<HttpResponse, Problem> {
    let (member, expires_at) = authenticate(&chat, &req)?;
    let registration = chat
        .hub
        .register(
            member,
            chat.limits.queue,
            chat.limits.max_connections_per_user,
        )
        .map_err(|e| {
            // A slot frees when one of the user's other connections ends.
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                e.to_string(),
            )
            .with_retry_after(Duration::from_secs(5))
        })?;
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "websocket_upgrade_required",
            e.to_string(),
        )
    })?;
    let chat: Arc<Chat> = chat.into_inner();
    // The stream reads the request body, which lives on this worker.
    actix_web::rt::spawn(crate::session::run(
        chat,
        registration,
        session,
        stream,
        expires_at,
    ));
    Ok(response)
}

async fn rooms(req: HttpRequest, chat: web::Data<Chat>) -> Result<HttpResponse, Problem> {
    authenticate(&chat, &req)?;
    let mut rooms = chat.hub.local_rooms();
    rooms.sort();
    Ok(HttpResponse::Ok().json(json!({ "rooms": rooms })))
}

fn check_room(room: &str) -> Result<(), Problem> {
    if valid_room(room) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "bad_room",
            ROOM_RULES,
        ))
    }
}

fn unavailable(what: &str, error: &crate::broker::BrokerError) -> Problem {
    tracing::warn!(error = %common::exit::chain(error), "{what} unavailable");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("{what} is unavailable"),
    )
    .with_retry_after(Duration::from_secs(1))
}

async fn presence(
    req: HttpRequest,
    room: web::Path<String>,
    chat: web::Data<Chat>,
) -> Result<HttpResponse, Problem> {
    authenticate(&chat, &req)?;
    check_room(&room)?;
    let members = chat
        .broker
        .presence(&room)
        .await
        .map_err(|e| unavailable("presence", &e))?;
    Ok(HttpResponse::Ok().json(json!({ "room": *room, "members": members })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    #[serde(default)]
    limit: Option<u32>,
    /// Accepted here too, as on every route.
    #[serde(default, rename = "access_token")]
    _access_token: Option<String>,
}

async fn history(
    req: HttpRequest,
    room: web::Path<String>,
    chat: web::Data<Chat>,
) -> Result<HttpResponse, Problem> {
    authenticate(&chat, &req)?;
    check_room(&room)?;
    let query = web::Query::<HistoryQuery>::from_query(req.query_string())
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "bad_query", e.to_string()))?
        .into_inner();
    let limit = query.limit.unwrap_or(50).clamp(1, 1000) as usize;
    let history = chat
        .broker
        .history(&room, limit)
        .await
        .map_err(|e| unavailable("history", &e))?;
    Ok(HttpResponse::Ok().json(json!({
        "room": *room,
        "position": history.position,
        "messages": history.missed,
    })))
}
