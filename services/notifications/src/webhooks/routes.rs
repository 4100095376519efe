//! `/api/v1/notifications/webhooks`: the signed-in user's endpoints.
//! Another user's endpoint is a 404 like one that does not exist.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use common::problem::Problem;

use super::signing::Secret;
use super::store::{Resend, Webhook};
use super::url::{self, Refused};
use crate::App;
use crate::routes::{positive_id, unavailable, user};
use crate::store::now_ms;

/// The longest URL accepted.
const MAX_URL_BYTES: usize = 2048;
/// Deliveries listed per request at most.
const MAX_DELIVERIES: u32 = 100;

pub fn configure(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/webhooks", web::post().to(create))
        .route("/webhooks", web::get().to(list))
        .route("/webhooks/{id}", web::get().to(get))
        .route("/webhooks/{id}", web::delete().to(delete))
        .route("/webhooks/{id}/rotate", web::post().to(rotate))
        .route("/webhooks/{id}/enable", web::post().to(enable))
        .route("/webhooks/{id}/deliveries", web::get().to(deliveries))
        .route(
            "/webhooks/{id}/deliveries/{delivery}/resend",
            web::post().to(resend),
        )
}

fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "no such webhook")
}

fn id(path: &str) -> Result<i64, Problem> {
    positive_id(path, "webhook")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    url: String,
}

async fn create(
    req: HttpRequest,
    app: web::Data<App>,
    body: common::json::JsonObject<NewWebhook>,
) -> Result<HttpResponse, Problem> {
    let user = user(&req, &app)?;
    let invalid = |detail: String| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail).with_field("url")
    };
    if body.url.len() > MAX_URL_BYTES {
        return Err(invalid(format!("a URL is at most {MAX_URL_BYTES} bytes")));
    }
    // Stored as parsed (tabs and newlines stripped), which is what was
    // checked.
    let Ok(parsed) = ::url::Url::parse(&body.url) else {
        return Err(invalid(Refused::Malformed.public_reason().to_owned()));
    };
    if let Err(refused) = url::check(parsed.as_str(), &app.webhooks.http_allowed).await {
        return Err(invalid(refused.public_reason().to_owned()));
    }
    let secret = Secret::generate();
    let created = app
        .store
        .create_webhook(user, parsed.as_str(), &secret, app.webhooks.max_per_user)
        .await
        .map_err(|e| unavailable(&e))?;
    match created {
        Some(webhook) => Ok(HttpResponse::Created()
            .insert_header(("cache-control", "no-store"))
            .insert_header((
                "location",
                format!("/api/v1/notifications/webhooks/{}", webhook.id),
            ))
            .json(json!({ "webhook": webhook, "secret": secret.expose() }))),
        None => Err(Problem::new(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!(
                "a user has at most {} webhooks; delete one first",
                app.webhooks.max_per_user
            ),
        )),
    }
}

async fn list(req: HttpRequest, app: web::Data<App>) -> Result<HttpResponse, Problem> {
    let user = user(&req, &app)?;
    let webhooks = app
        .store
        .webhooks(user)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(HttpResponse::Ok().json(json!({ "webhooks": webhooks })))
}

/// The caller and their endpoint named by `path`, or 404.
async fn owned(req: &HttpRequest, app: &App, path: &str) -> Result<(i64, Webhook), Problem> {
    let user = user(req, app)?;
    let id = id(path)?;
    match app
        .store
        .webhook(user, id)
        .await
        .map_err(|e| unavailable(&e))?
    {
        Some(webhook) => Ok((user, webhook)),
        None => Err(not_found()),
    }
}

async fn get(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let (_, webhook) = owned(&req, &app, &path).await?;
    Ok(HttpResponse::Ok().json(webhook))
}

async fn delete(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let user = user(&req, &app)?;
    let id = id(&path)?;
    if app
        .store
        .delete_webhook(user, id)
        .await
        .map_err(|e| unavailable(&e))?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(not_found())
    }
}

async fn rotate(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let user = user(&req, &app)?;
    let id = id(&path)?;
    let secret = Secret::generate();
    let grace = i64::try_from(app.webhooks.rotation_grace.as_millis()).unwrap_or(i64::MAX);
    let until = now_ms().saturating_add(grace);
    if !app
        .store
        .rotate_webhook(user, id, &secret, until)
        .await
        .map_err(|e| unavailable(&e))?
    {
        return Err(not_found());
    }
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(json!({
            "secret": secret.expose(),
            "previous_secret_valid_until": crate::store::rfc3339(until),
        })))
}

async fn enable(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let user = user(&req, &app)?;
    let id = id(&path)?;
    if !app
        .store
        .enable_webhook(user, id)
        .await
        .map_err(|e| unavailable(&e))?
    {
        return Err(not_found());
    }
    match app
        .store
        .webhook(user, id)
        .await
        .map_err(|e| unavailable(&e))?
    {
        Some(webhook) => Ok(HttpResponse::Ok().json(webhook)),
        None => Err(not_found()),
    }
}

#[derive(Deserialize)]
pub(crate) struct DeliveriesQuery {
    limit: Option<u32>,
}

async fn deliveries(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, Problem> {
    let (_, webhook) = owned(&req, &app, &path).await?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_DELIVERIES).contains(&limit) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("limit is 1 to {MAX_DELIVERIES}"),
        )
        .with_field("limit"));
    }
    let deliveries = app
        .store
        .deliveries(webhook.id, limit)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(HttpResponse::Ok().json(json!({ "deliveries": deliveries })))
}

async fn resend(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (hook, delivery) = path.into_inner();
    let (user, webhook) = owned(&req, &app, &hook).await?;
    match app
        .store
        .resend(user, webhook.id, &delivery)
        .await
        .map_err(|e| unavailable(&e))?
    {
        Resend::Queued => {}
        Resend::Missing => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such delivery",
            ));
        }
        Resend::InFlight => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "delivery_in_progress",
                "the delivery is still being attempted; re-send it once it is delivered or dead",
            ));
        }
        Resend::Disabled => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "webhook_disabled",
                "the webhook is disabled; enable it first",
            ));
        }
    }
    app.webhook_wake.notify_one();
    Ok(HttpResponse::Accepted().json(json!({ "delivery": delivery, "state": "pending" })))
}
