//! The caller's notification preferences and webhooks, relayed to the
//! notifications service like the rest of `/api/v1/notifications` (the
//! token checked here, revocation included).

use actix_web::web;

use crate::notifications::relayed;
use crate::problem::ProblemBody;
use crate::routes::not_allowed;

/// Adds the routes to the notifications scope (before its `/{id}`).
pub fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/preferences", web::get().to(get_preferences))
        .route("/preferences", not_allowed("GET"))
        .route("/preferences/{topic}", web::put().to(set_preference))
        .route("/preferences/{topic}", not_allowed("PUT"))
        .route("/webhooks", web::get().to(list_webhooks))
        .route("/webhooks", web::post().to(create_webhook))
        .route("/webhooks", not_allowed("GET, POST"))
        .route("/webhooks/{id}", web::get().to(get_webhook))
        .route("/webhooks/{id}", web::delete().to(delete_webhook))
        .route("/webhooks/{id}", not_allowed("GET, DELETE"))
        .route(
            "/webhooks/{id}/rotate",
            web::post().to(rotate_webhook_secret),
        )
        .route("/webhooks/{id}/rotate", not_allowed("POST"))
        .route("/webhooks/{id}/enable", web::post().to(enable_webhook))
        .route("/webhooks/{id}/enable", not_allowed("POST"))
        .route(
            "/webhooks/{id}/deliveries",
            web::get().to(webhook_deliveries),
        )
        .route("/webhooks/{id}/deliveries", not_allowed("GET"))
        .route(
            "/webhooks/{id}/deliveries/{delivery}/resend",
            web::post().to(resend_delivery),
        )
        .route(
            "/webhooks/{id}/deliveries/{delivery}/resend",
            not_allowed("POST"),
        )
}

/// How each choosable topic is delivered: `instant` (the default),
/// `muted`, or `digest` (held for one daily summary).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TopicModes {
    #[schema(pattern = "^(instant|muted|digest)$")]
    pub comment: String,
    #[schema(pattern = "^(instant|muted|digest)$")]
    pub mention: String,
    #[schema(pattern = "^(instant|muted|digest)$")]
    pub file: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Preferences {
    pub topics: TopicModes,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferenceChoice {
    #[schema(pattern = "^(instant|muted|digest)$")]
    pub mode: String,
}

/// `{topic}` in a path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TopicPath {
    #[param(pattern = "^(comment|mention|file)$")]
    pub topic: String,
}

/// An endpoint notifications are POSTed to.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    /// False once it has failed for a day (until enabled again).
    pub enabled: bool,
    /// The first failure since the last success, while failing.
    pub failing_since: Option<String>,
    pub created_at: String,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// https (plain http only to addresses the operator allows); it must
    /// resolve to public addresses only.
    #[schema(max_length = 2048, pattern = "^https?://")]
    pub url: String,
}

/// A new endpoint and its signing secret, shown this once.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    pub webhook: Webhook,
    /// `whsec_…`: verifies deliveries by the Standard Webhooks convention.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/=]+$")]
    pub secret: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    #[schema(pattern = "^whsec_[A-Za-z0-9+/=]+$")]
    pub secret: String,
    /// Until then deliveries are signed by the old secret too.
    pub previous_secret_valid_until: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    pub at: String,
    /// The receiver's HTTP status, when one came back.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// One notification to one endpoint.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The `webhook-id` header, the same on every attempt and re-send.
    pub id: String,
    pub webhook_id: i64,
    #[schema(pattern = "^(pending|retrying|delivered|dead|skipped)$")]
    pub state: String,
    pub attempts: Vec<DeliveryAttempt>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Resent {
    pub delivery: String,
    #[schema(pattern = "^pending$")]
    pub state: String,
}

/// `{id}` in a webhook's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookPath {
    #[param(minimum = 1)]
    pub id: i64,
}

/// `{id}` and `{delivery}` in a delivery's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeliveryPath {
    #[param(minimum = 1)]
    pub id: i64,
    #[param(pattern = "^msg_[0-9a-f]{32}$")]
    pub delivery: String,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesParams {
    /// 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

relayed! {
    /// How the caller's notifications of each topic are delivered.
    #[utoipa::path(get, path = "/api/v1/notifications/preferences", tag = "notifications",
        security(("bearer" = [])), responses((status = 200, body = Preferences)))]
    get_preferences
}

relayed! {
    /// Chooses how one topic is delivered.
    #[utoipa::path(put, path = "/api/v1/notifications/preferences/{topic}", tag = "notifications",
        security(("bearer" = [])), params(TopicPath), request_body = PreferenceChoice,
        responses((status = 200, body = Preferences), (status = 400, body = ProblemBody)))]
    set_preference
}

relayed! {
    /// The caller's webhooks.
    #[utoipa::path(get, path = "/api/v1/notifications/webhooks", tag = "notifications",
        security(("bearer" = [])), responses((status = 200, body = WebhookList)))]
    list_webhooks
}

relayed! {
    /// Registers a webhook: each new notification of the caller's is POSTed
    /// to it, signed (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    #[utoipa::path(post, path = "/api/v1/notifications/webhooks", tag = "notifications",
        security(("bearer" = [])), request_body = NewWebhook,
        responses((status = 201, body = CreatedWebhook),
            (status = 409, description = "the caller has the most webhooks allowed", body = ProblemBody),
            (status = 422, description = "the URL is refused", body = ProblemBody)))]
    create_webhook
}

relayed! {
    /// One of the caller's webhooks; anyone else's is a 404.
    #[utoipa::path(get, path = "/api/v1/notifications/webhooks/{id}", tag = "notifications",
        security(("bearer" = [])), params(WebhookPath),
        responses((status = 200, body = Webhook), (status = 404, body = ProblemBody)))]
    get_webhook
}

relayed! {
    /// Deletes a webhook and its deliveries.
    #[utoipa::path(delete, path = "/api/v1/notifications/webhooks/{id}", tag = "notifications",
        security(("bearer" = [])), params(WebhookPath),
        responses((status = 204, description = "deleted"), (status = 404, body = ProblemBody)))]
    delete_webhook
}

relayed! {
    /// A new signing secret; the old one signs too for a grace period.
    #[utoipa::path(post, path = "/api/v1/notifications/webhooks/{id}/rotate", tag = "notifications",
        security(("bearer" = [])), params(WebhookPath),
        responses((status = 200, body = RotatedSecret), (status = 404, body = ProblemBody)))]
    rotate_webhook_secret
}

relayed! {
    /// Enables a disabled webhook again.
    #[utoipa::path(post, path = "/api/v1/notifications/webhooks/{id}/enable", tag = "notifications",
        security(("bearer" = [])), params(WebhookPath),
        responses((status = 200, body = Webhook), (status = 404, body = ProblemBody)))]
    enable_webhook
}

relayed! {
    /// The webhook's latest deliveries, newest first, with every attempt.
    #[utoipa::path(get, path = "/api/v1/notifications/webhooks/{id}/deliveries", tag = "notifications",
        security(("bearer" = [])), params(WebhookPath, DeliveriesParams),
        responses((status = 200, body = DeliveryList), (status = 404, body = ProblemBody)))]
    webhook_deliveries
}

relayed! {
    /// Sends a finished delivery (delivered, dead or skipped) again, with the
    /// same `webhook-id`.
    #[utoipa::path(post, path = "/api/v1/notifications/webhooks/{id}/deliveries/{delivery}/resend",
        tag = "notifications", security(("bearer" = [])), params(DeliveryPath),
        responses((status = 202, body = Resent), (status = 404, body = ProblemBody),
            (status = 409, description = "the delivery is still being attempted (`delivery_in_progress`), or the webhook is disabled (`webhook_disabled`)", body = ProblemBody)))]
    resend_delivery
}
