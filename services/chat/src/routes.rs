//! HTTP: the WebSocket upgrade and REST for presence and history. Every
//! route needs the gateway's access token as `Authorization: Bearer`;
//! browsers, which cannot set headers on an upgrade, come through the
//! gateway with a single-use ticket, which the gateway exchanges for the
//! header. A token in the URL is never accepted.

use common::json::JsonObject;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use common::problem::Problem;
use serde::Deserialize;
use serde_json::json;

use crate::Chat;
use crate::protocol::{Member, ROOM_RULES, valid_room};

/// Largest REST body (a room with its member list).
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(|error, _| Problem::json_body(&error, MAX_BODY_BYTES).into()),
    );
    cfg.route("/ws", web::get().to(upgrade))
        .route("/rooms", web::get().to(rooms))
        .route("/rooms", web::post().to(create_room))
        .route("/rooms/{room}", web::get().to(room_info))
        .route("/rooms/{room}/presence", web::get().to(presence))
        .route("/rooms/{room}/history", web::get().to(history));
}

/// The caller named by a valid access token, and when that token expires.
fn authenticate(chat: &Chat, req: &HttpRequest) -> Result<(Member, SystemTime), Problem> {
    let claims = common::auth::access_claims(req.headers(), &chat.signer)?;
    let id = claims.user_id().unwrap_or_default();
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

/// Rooms with members here, without the private ones the caller is not
/// in: their names are theirs too.
async fn rooms(req: HttpRequest, chat: web::Data<Chat>) -> Result<HttpResponse, Problem> {
    let (member, _) = authenticate(&chat, &req)?;
    let mut visible = Vec::new();
    for room in chat.hub.local_rooms() {
        let access = chat
            .broker
            .room_access(&room)
            .await
            .map_err(|e| unavailable("rooms", &e))?;
        if access.is_none_or(|a| a.admits(member.id)) {
            visible.push(room);
        }
    }
    visible.sort();
    Ok(HttpResponse::Ok().json(json!({ "rooms": visible })))
}

/// Most members a private room is created with.
pub const MAX_ROOM_MEMBERS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRoom {
    name: String,
    #[serde(default)]
    private: bool,
    /// User ids besides the creator, for a private room.
    #[serde(default)]
    members: Vec<common::json::Whole>,
}

fn forbidden() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this room is private and you are not a member",
    )
}

/// The room's access rules, refusing a caller it does not admit.
async fn admitted(
    chat: &Chat,
    room: &str,
    user: u64,
) -> Result<Option<crate::broker::RoomAccess>, Problem> {
    let access = chat
        .broker
        .room_access(room)
        .await
        .map_err(|e| unavailable("the room", &e))?;
    match access {
        Some(access) if !access.admits(user) => Err(forbidden()),
        other => Ok(other),
    }
}

/// `POST /rooms {name, private, members}`: claims a room name. A name
/// already claimed, or already in use as a public room (it has history or
/// members), is `409 room_exists`: nobody can take a room others talk in
/// and read its past.
async fn create_room(
    req: HttpRequest,
    body: JsonObject<NewRoom>,
    chat: web::Data<Chat>,
) -> Result<HttpResponse, Problem> {
    let (member, _) = authenticate(&chat, &req)?;
    let NewRoom {
        name,
        private,
        members,
    } = body.into_inner();
    check_room(&name)?;
    if !private && !members.is_empty() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "members are only for private rooms",
        )
        .with_field("members"));
    }
    // User ids are positive and fit an i64, as the users service keeps them.
    let max_id = i64::MAX.unsigned_abs();
    let mut members: Vec<u64> = members.into_iter().map(|m| m.0).collect();
    members.push(member.id);
    members.sort_unstable();
    members.dedup();
    if members.len() > MAX_ROOM_MEMBERS || members.iter().any(|&m| m == 0 || m > max_id) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("members are 1 to {MAX_ROOM_MEMBERS} user ids, each from 1 to {max_id}"),
        )
        .with_field("members"));
    }
    let claim = crate::idempotency::Claim::from_request(
        &req,
        member.id,
        &format!("{name}\n{private}\n{members:?}"),
    )?;
    if let Some(claim) = &claim {
        claim.check(chat.broker.as_ref()).await?;
        // A retry of a creation that got through: its answer again, even
        // if the room is in use by now.
        if let Some(access) = created_by(&chat, &name, claim).await? {
            return Ok(room_created(&name, &access));
        }
    }
    let taken = || {
        Problem::new(
            StatusCode::CONFLICT,
            "room_exists",
            "a room with this name exists",
        )
    };
    let in_use = chat
        .broker
        .presence_count(&name)
        .await
        .map_err(|e| unavailable("the room", &e))?
        > 0
        || chat
            .broker
            .history(&name, 1)
            .await
            .map_err(|e| unavailable("the room", &e))?
            .position
            .offset
            > 0;
    if in_use {
        return Err(taken());
    }
    let access = crate::broker::RoomAccess {
        private,
        owner: member.id,
        members: if private { members } else { Vec::new() },
        created_by: claim.as_ref().map(|c| c.id.clone()),
    };
    let created = chat
        .broker
        .create_room(&name, &access)
        .await
        .map_err(|e| match e {
            crate::broker::BrokerError::Full => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "too_many_rooms",
                "no more rooms can be created here",
            ),
            other => unavailable("the room", &other),
        })?;
    if created {
        return Ok(room_created(&name, &access));
    }
    // Lost the claim, perhaps to the same request sent twice at once.
    if let Some(claim) = &claim
        && let Some(access) = created_by(&chat, &name, claim).await?
    {
        return Ok(room_created(&name, &access));
    }
    Err(taken())
}

/// The room's rules when `claim` is what created it.
async fn created_by(
    chat: &Chat,
    room: &str,
    claim: &crate::idempotency::Claim,
) -> Result<Option<crate::broker::RoomAccess>, Problem> {
    let access = chat
        .broker
        .room_access(room)
        .await
        .map_err(|e| unavailable("the room", &e))?;
    Ok(access.filter(|a| a.created_by.as_deref() == Some(claim.id.as_str())))
}

fn room_created(room: &str, access: &crate::broker::RoomAccess) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((actix_web::http::header::LOCATION, format!("/rooms/{room}")))
        .json(room_json(room, Some(access)))
}

fn room_json(room: &str, access: Option<&crate::broker::RoomAccess>) -> serde_json::Value {
    match access {
        Some(access) => json!({
            "room": room,
            "private": access.private,
            "owner": access.owner,
            "members": access.members,
        }),
        None => json!({ "room": room, "private": false }),
    }
}

/// `GET /rooms/{room}`: who may enter.
async fn room_info(
    req: HttpRequest,
    room: web::Path<String>,
    chat: web::Data<Chat>,
) -> Result<HttpResponse, Problem> {
    let (member, _) = authenticate(&chat, &req)?;
    check_room(&room)?;
    let access = admitted(&chat, &room, member.id).await?;
    Ok(HttpResponse::Ok().json(room_json(&room, access.as_ref())))
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

pub(crate) fn unavailable(what: &str, error: &crate::broker::BrokerError) -> Problem {
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
    let (member, _) = authenticate(&chat, &req)?;
    check_room(&room)?;
    admitted(&chat, &room, member.id).await?;
    let members = chat
        .broker
        .presence(&room)
        .await
        .map_err(|e| unavailable("presence", &e))?;
    Ok(HttpResponse::Ok().json(json!({ "room": *room, "members": members })))
}

/// Most messages one history request returns.
const MAX_HISTORY: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    #[serde(default)]
    limit: Option<u32>,
}

async fn history(
    req: HttpRequest,
    room: web::Path<String>,
    chat: web::Data<Chat>,
) -> Result<HttpResponse, Problem> {
    let (member, _) = authenticate(&chat, &req)?;
    check_room(&room)?;
    admitted(&chat, &room, member.id).await?;
    let query = web::Query::<HistoryQuery>::from_query(req.query_string())
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "bad_query", e.to_string()))?
        .into_inner();
    let limit = match query.limit.unwrap_or(50) {
        n @ 1..=MAX_HISTORY => n as usize,
        _ => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("limit must be between 1 and {MAX_HISTORY}"),
            ));
        }
    };
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
