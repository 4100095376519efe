//! `/api/v1/notifications`: the notifications service behind the gateway.
//!
//! Every route checks the access token here, revocation included (the
//! service checks only the signature), then relays the request to a
//! notifications instance found through discovery, behind its breaker.
//! `GET /api/v1/notifications/stream` is a server-sent event stream,
//! relayed chunk by chunk as it arrives (the pass-through never buffers a
//! body, and the upstream timeout bounds only the wait for the answer's
//! head). Browsers, whose `EventSource` cannot send headers, pass a
//! single-use `?ticket=` from `POST /api/v1/auth/ticket`; the gateway
//! redeems it and sends the token it stands for upstream, never the
//! ticket.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::problem::{ApiError, ProblemBody};
use crate::proxy::{self, Passthrough};
use crate::routes::not_allowed;
use crate::upstream::{CallContext, Upstream};

/// The notifications service's upstream, as app data of its scope.
pub struct NotificationsUpstream(pub Arc<Upstream>);

pub fn configure(cfg: &mut web::ServiceConfig, upstream: Arc<Upstream>) {
    let scope = web::scope("/api/v1/notifications")
        .app_data(web::Data::new(NotificationsUpstream(upstream)))
        .route("", web::get().to(list_notifications))
        .route("", not_allowed("GET"))
        .route("/stream", web::get().to(stream))
        .route("/stream", not_allowed("GET"))
        .route("/unread-count", web::get().to(unread_count))
        .route("/unread-count", not_allowed("GET"))
        .route("/read-all", web::post().to(read_all))
        .route("/read-all", not_allowed("POST"));
    // The fixed paths before `/{id}`, which would take them.
    cfg.service(
        crate::notification_settings::routes(scope)
            .route("/{id}", web::get().to(get_notification))
            .route("/{id}", web::delete().to(delete_notification))
            .route("/{id}", not_allowed("GET, DELETE"))
            .route("/{id}/read", web::post().to(read_notification))
            .route("/{id}/read", not_allowed("POST"))
            .wrap(actix_web::middleware::from_fn(crate::ratelimit::limit_rate))
            .wrap(actix_web::middleware::from_fn(crate::request::request_id))
            .wrap(actix_web::middleware::from_fn(crate::cors::cors)),
    );
}

/// The seed's notification, numbered within its user's (`seq`, the id of
/// its server-sent event).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: i64,
    pub seq: i64,
    #[serde(rename = "type")]
    #[schema(rename = "type", pattern = "^(info|warning|error)$")]
    pub kind: String,
    /// What it is about, as preferences choose by.
    #[schema(pattern = "^(welcome|comment|mention|file|digest|system)$")]
    pub topic: String,
    pub title: String,
    pub message: String,
    pub user_id: i64,
    pub read: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// One page, newest first.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct NotificationPage {
    pub notifications: Vec<Notification>,
    /// Pass as `cursor` for the next (older) page; null on the last one.
    pub next_cursor: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct UnreadCount {
    pub unread: i64,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MarkedRead {
    /// How many were unread.
    pub marked: i64,
}

/// `{id}` in a path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NotificationPath {
    #[param(minimum = 1)]
    pub id: i64,
}

/// `GET /api/v1/notifications` filters and pages.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Unread ones only.
    pub unread: Option<bool>,
    /// A previous page's `next_cursor`.
    #[param(pattern = "^[1-9][0-9]{0,18}$")]
    pub cursor: Option<String>,
    /// 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// A route relayed as it is (path, query and, unless `without body`, the
/// body) after the access token is checked here, revocation included (the
/// service checks only the signature).
macro_rules! relayed {
    ($(#[$doc:meta])* $name:ident without body) => {
        $(#[$doc])*
        pub async fn $name(
            _signed_in: $crate::auth::Session,
            req: actix_web::HttpRequest,
            ctx: $crate::upstream::CallContext,
            pass: actix_web::web::Data<$crate::proxy::Passthrough>,
            up: actix_web::web::Data<$crate::notifications::NotificationsUpstream>,
        ) -> Result<actix_web::HttpResponse, $crate::problem::ApiError> {
            $crate::notifications::relay(req, actix_web::web::Bytes::new(), ctx, pass, up).await
        }
    };
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub async fn $name(
            _signed_in: $crate::auth::Session,
            req: actix_web::HttpRequest,
            body: actix_web::web::Bytes,
            ctx: $crate::upstream::CallContext,
            pass: actix_web::web::Data<$crate::proxy::Passthrough>,
            up: actix_web::web::Data<$crate::notifications::NotificationsUpstream>,
        ) -> Result<actix_web::HttpResponse, $crate::problem::ApiError> {
            $crate::notifications::relay(req, body, ctx, pass, up).await
        }
    };
}
pub(crate) use relayed;

relayed! {
    /// The caller's notifications, newest first.
    #[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications",
        security(("bearer" = [])), params(ListParams),
        responses((status = 200, body = NotificationPage)))]
    list_notifications without body
}

relayed! {
    /// How many of the caller's notifications are unread.
    #[utoipa::path(get, path = "/api/v1/notifications/unread-count", tag = "notifications",
        security(("bearer" = [])), responses((status = 200, body = UnreadCount)))]
    unread_count without body
}

relayed! {
    /// Marks every one of the caller's notifications read.
    #[utoipa::path(post, path = "/api/v1/notifications/read-all", tag = "notifications",
        security(("bearer" = [])), responses((status = 200, body = MarkedRead)))]
    read_all
}

relayed! {
    /// One of the caller's notifications; anyone else's is a 404.
    #[utoipa::path(get, path = "/api/v1/notifications/{id}", tag = "notifications",
        security(("bearer" = [])), params(NotificationPath),
        responses((status = 200, body = Notification), (status = 404, body = ProblemBody)))]
    get_notification without body
}

relayed! {
    /// Deletes one of the caller's notifications.
    #[utoipa::path(delete, path = "/api/v1/notifications/{id}", tag = "notifications",
        security(("bearer" = [])), params(NotificationPath),
        responses((status = 204, description = "deleted"), (status = 404, body = ProblemBody)))]
    delete_notification without body
}

relayed! {
    /// Marks one of the caller's notifications read.
    #[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications",
        security(("bearer" = [])), params(NotificationPath),
        responses((status = 204, description = "marked read"), (status = 404, body = ProblemBody)))]
    read_notification
}

/// The caller's notifications as server-sent events (`id: <seq>`, `event:
/// notification`, `data: <Notification>`), from now, or after
/// `Last-Event-ID`. Authenticated by `Authorization: Bearer`, or by a
/// single-use `?ticket=` (browsers' `EventSource`).
#[utoipa::path(get, path = "/api/v1/notifications/stream", tag = "notifications",
    security(("bearer" = []), ("ticket" = [])),
    params(("Last-Event-ID" = Option<String>, Header, pattern = "^[0-9]{1,18}$",
        description = "the id of the last event received: the stream resumes after it")),
    responses((status = 200, content_type = "text/event-stream",
        description = "the stream; comments keep it alive")))]
pub async fn stream(
    req: HttpRequest,
    ctx: CallContext,
    pass: web::Data<Passthrough>,
    up: web::Data<NotificationsUpstream>,
) -> Result<HttpResponse, ApiError> {
    let token = crate::auth::token_or_ticket(&req).await?;
    let authorization = actix_web::http::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ApiError::Unauthorized(crate::auth::INVALID_TOKEN.into()))?;
    // The ticket, if any, stays here: the path alone goes upstream.
    proxy::forward_as(
        &req,
        "/api/v1/notifications/stream",
        web::Bytes::new(),
        &ctx,
        &pass,
        &up.0,
        Some(authorization),
    )
    .await
}

/// The request, path and query unchanged (the service serves the same
/// paths).
pub(crate) async fn relay(
    req: HttpRequest,
    body: web::Bytes,
    ctx: CallContext,
    pass: web::Data<Passthrough>,
    up: web::Data<NotificationsUpstream>,
) -> Result<HttpResponse, ApiError> {
    proxy::forward_unchanged(&req, body, &ctx, &pass, &up.0).await
}
