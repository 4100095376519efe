//! Per-user preferences, as notification services like Novu offer: each
//! choosable topic (comments, mentions, files) arrives at once (the
//! default), is muted, or is held for the daily digest. They are read in
//! the transaction that stores a notification, so a change applies to the
//! next one whichever replica stores it.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use common::problem::Problem;

use crate::App;
use crate::routes::{unavailable, user};
use crate::store::{Store, StoreError, Topic};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Instant,
    Muted,
    Digest,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Instant => "instant",
            Self::Muted => "muted",
            Self::Digest => "digest",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "muted" => Self::Muted,
            "digest" => Self::Digest,
            _ => Self::Instant,
        }
    }
}

/// How `user` wants `topic` delivered, read inside `tx`.
pub(crate) async fn mode(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user: i64,
    topic: Topic,
) -> Result<Mode, StoreError> {
    if !Topic::CHOOSABLE.contains(&topic) {
        return Ok(Mode::Instant);
    }
    let row =
        sqlx::query("SELECT mode FROM notification_preferences WHERE user_id = $1 AND topic = $2")
            .bind(user)
            .bind(topic.as_str())
            .fetch_optional(&mut **tx)
            .await?;
    Ok(match row {
        Some(row) => Mode::parse(&row.try_get::<String, _>("mode")?),
        None => Mode::Instant,
    })
}

impl Store {
    /// Every choosable topic and how `user` has it.
    pub async fn preferences(&self, user: i64) -> Result<Vec<(Topic, Mode)>, StoreError> {
        let rows =
            sqlx::query("SELECT topic, mode FROM notification_preferences WHERE user_id = $1")
                .bind(user)
                .fetch_all(&self.pool)
                .await?;
        let mut chosen = Vec::with_capacity(rows.len());
        for row in &rows {
            let topic: String = row.try_get("topic")?;
            let mode: String = row.try_get("mode")?;
            if let Some(topic) = Topic::parse(&topic) {
                chosen.push((topic, Mode::parse(&mode)));
            }
        }
        Ok(Topic::CHOOSABLE
            .into_iter()
            .map(|topic| {
                let mode = chosen
                    .iter()
                    .find(|(t, _)| *t == topic)
                    .map_or(Mode::Instant, |(_, m)| *m);
                (topic, mode)
            })
            .collect())
    }

    /// Sets how `user` wants `topic`; instant is kept as no row.
    pub async fn set_preference(
        &self,
        user: i64,
        topic: Topic,
        mode: Mode,
    ) -> Result<(), StoreError> {
        if mode == Mode::Instant {
            sqlx::query("DELETE FROM notification_preferences WHERE user_id = $1 AND topic = $2")
                .bind(user)
                .bind(topic.as_str())
                .execute(&self.pool)
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO notification_preferences (user_id, topic, mode) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, topic) DO UPDATE SET mode = excluded.mode",
            )
            .bind(user)
            .bind(topic.as_str())
            .bind(mode.as_str())
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

fn body(preferences: &[(Topic, Mode)]) -> serde_json::Value {
    let topics: serde_json::Map<String, serde_json::Value> = preferences
        .iter()
        .map(|(topic, mode)| (topic.as_str().to_owned(), mode.as_str().into()))
        .collect();
    serde_json::json!({ "topics": topics })
}

/// `GET /api/v1/notifications/preferences`.
pub(crate) async fn get(req: HttpRequest, app: web::Data<App>) -> Result<HttpResponse, Problem> {
    let user = user(&req, &app)?;
    let preferences = app
        .store
        .preferences(user)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(HttpResponse::Ok().json(body(&preferences)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Choice {
    mode: Mode,
}

/// `PUT /api/v1/notifications/preferences/{topic}` with `{"mode": …}`.
pub(crate) async fn put(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    choice: web::Json<Choice>,
) -> Result<HttpResponse, Problem> {
    let user = user(&req, &app)?;
    let topic = Topic::parse(&path)
        .filter(|topic| Topic::CHOOSABLE.contains(topic))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "the topics to choose for are comment, mention and file",
            )
            .with_field("topic")
        })?;
    app.store
        .set_preference(user, topic, choice.mode)
        .await
        .map_err(|e| unavailable(&e))?;
    let preferences = app
        .store
        .preferences(user)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(HttpResponse::Ok().json(body(&preferences)))
}
