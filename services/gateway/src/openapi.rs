//! The OpenAPI 3 document of the public REST API, generated from the
//! handlers' annotations and served at `/openapi.json`. A test compares it
//! with the committed `services/gateway/openapi.json` and calls every
//! documented operation, so the document and the routes cannot drift.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Type};
use utoipa::{Modify, OpenApi};

use crate::routes::{auth, posts, search, users, v2};
use crate::{chat, notification_settings, notifications};

/// An access token in `Authorization`, or, where a browser cannot set
/// that header (the WebSocket upgrade), a single-use ticket in the query.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "ticket",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "A single-use ticket from `POST /api/v1/auth/ticket`, valid for `GATEWAY_TICKET_TTL`.",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Platform API", description = "The platform's public REST API, served by the gateway."),
    paths(
        users::sign_up, auth::login, auth::refresh, auth::logout, auth::ticket, users::list, users::get, users::update, users::delete,
        posts::create_post, posts::get_post, posts::update_post, posts::delete_post, posts::posts_of_user,
        posts::create_comment, posts::comments_of_post, posts::comments_of_user,
        posts::get_comment, posts::update_comment, posts::delete_comment,
        search::search, search::suggest,
        v2::list_users, v2::get_user,
        v2::posts_of_user, v2::comments_of_post, v2::comments_of_user, v2::get_post, v2::get_comment,
        chat::ws, chat::rooms, chat::create_room, chat::room, chat::presence, chat::history,
        notifications::list_notifications, notifications::unread_count, notifications::read_all,
        notifications::get_notification, notifications::delete_notification,
        notifications::read_notification, notifications::stream,
        notification_settings::get_preferences, notification_settings::set_preference,
        notification_settings::list_webhooks, notification_settings::create_webhook,
        notification_settings::get_webhook, notification_settings::delete_webhook,
        notification_settings::rotate_webhook_secret, notification_settings::enable_webhook,
        notification_settings::webhook_deliveries, notification_settings::resend_delivery,
    ),
    modifiers(&SecuritySchemes, &Problems)
)]
pub struct ApiDoc;

/// The problem answers, each once under `components.responses`, with what
/// makes the gateway answer them. Some depend on the operation's shape
/// (a body, parameters, a token); the rest on the gateway itself (its rate
/// limit, its upstreams), so every operation can answer them.
const PROBLEMS: &[(StatusCode, &str, &str)] = &[
    (
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "The request is malformed or breaks a documented constraint (`invalid_field`, `invalid_json`, `invalid_path`, `invalid_query`, `invalid_cursor`, `invalid_idempotency_key`; chat's `bad_query`; `websocket_upgrade_required`).",
    ),
    (
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "No valid access token: missing where required, or expired, revoked, or signed wrongly (`unauthorized`).",
    ),
    (
        StatusCode::FORBIDDEN,
        "Forbidden",
        "The token is valid but its user may not do this (`forbidden`).",
    ),
    (
        StatusCode::NOT_FOUND,
        "NotFound",
        "Nothing by that id (`not_found`).",
    ),
    (
        StatusCode::CONFLICT,
        "Conflict",
        "The change conflicts with the current state (`already_exists`, `version_conflict`, `room_exists`).",
    ),
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLarge",
        "The body is larger than `GATEWAY_MAX_BODY_BYTES` (`payload_too_large`).",
    ),
    (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        "The body is not `application/json` (`unsupported_media_type`).",
    ),
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        "IdempotencyKeyReused",
        "The `Idempotency-Key` was already used with a different request (`idempotency_key_reused`).",
    ),
    (
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "The client, or the account it names, is over its rate limit; `Retry-After` says when to try again (`rate_limited`).",
    ),
    (
        StatusCode::INSUFFICIENT_STORAGE,
        "InsufficientStorage",
        "The service holds as much as it may and cannot take more (`too_many_rooms`).",
    ),
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "The gateway failed to answer; the detail is in its log, not here (`internal`).",
    ),
    (
        StatusCode::BAD_GATEWAY,
        "BadGateway",
        "The service behind the gateway failed (`upstream_error`).",
    ),
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "The service behind the gateway, or a backend the gateway needs (its rate limiter, its token store), is unavailable; `Retry-After` says when to try again (`upstream_unavailable`).",
    ),
    (
        StatusCode::GATEWAY_TIMEOUT,
        "GatewayTimeout",
        "The service behind the gateway did not answer in time (`upstream_timeout`).",
    ),
];

/// Answers every operation can give, whatever its shape.
const ALWAYS: &[StatusCode] = &[
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

/// Documents the problem answers of every operation: the annotations name
/// the statuses particular to a route (a 404, a 409), this adds the ones
/// that follow from its shape or from the gateway, and every problem
/// answer points at one shared response with `application/problem+json`.
struct Problems;

impl Modify for Problems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (status, name, description) in PROBLEMS {
            components.responses.insert(
                (*name).to_owned(),
                RefOr::T(problem_response(*status, description)),
            );
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                document_problems(operation);
            }
        }
    }
}

fn problem_response(status: StatusCode, description: &str) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        common::problem::CONTENT_TYPE,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    );
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                ))
                .description(Some("Seconds to wait before trying again."))
                .build(),
        );
    }
    if status == StatusCode::UNAUTHORIZED {
        response = response.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new().schema_type(Type::String),
                ))
                .description(Some("The `Bearer` challenge (RFC 6750)."))
                .build(),
        );
    }
    response.build()
}

fn document_problems(operation: &mut Operation) {
    let mut statuses: Vec<StatusCode> = ALWAYS.to_vec();
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = operation.request_body.is_some();
    if has_parameters || has_body {
        statuses.push(StatusCode::BAD_REQUEST);
    }
    if has_body {
        statuses.extend([
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ]);
    }
    if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
        statuses.push(StatusCode::UNAUTHORIZED);
    }
    let responses = &mut operation.responses.responses;
    for (status, response) in responses.iter_mut() {
        let Some(code) = status
            .parse()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        else {
            continue;
        };
        if let Some(shared) = problem_ref(code) {
            *response = shared;
        } else if let RefOr::T(response) = response
            && response.description.is_empty()
        {
            response.description = code.canonical_reason().unwrap_or("answer").to_owned();
        }
    }
    for code in statuses {
        if let Some(shared) = problem_ref(code) {
            responses.entry(code.as_str().to_owned()).or_insert(shared);
        }
    }
}

/// The shared response of a problem status, if it is one.
fn problem_ref(code: StatusCode) -> Option<RefOr<Response>> {
    PROBLEMS
        .iter()
        .find(|(status, ..)| *status == code)
        .map(|(_, name, _)| RefOr::Ref(Ref::from_response_name(*name)))
}

/// The document as pretty JSON.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

pub async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}
