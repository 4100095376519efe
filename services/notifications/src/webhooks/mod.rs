//! Webhooks: each notification is POSTed to its user's registered
//! endpoints, signed by the Standard Webhooks convention ([`signing`]).
//!
//! - Registration checks the URL ([`url`]): https, or http to the
//!   `host:port`s the operator allows; every resolved address public.
//! - The notification's transaction also writes one delivery row per
//!   enabled endpoint (an outbox, [`store::outbox`]); the [`relay`] hands
//!   each to the common `JobQueue` as a job, so a broker outage delays
//!   deliveries and loses none.
//! - The job ([`send`]) checks the URL again, connects only to the
//!   addresses that check vetted (no second lookup to rebind), follows no
//!   redirect, and records the attempt; a failure is retried with the
//!   queue's backoff until `WEBHOOK_MAX_ATTEMPTS`, then the delivery is
//!   dead (dead-lettered). An endpoint failing for `WEBHOOK_DISABLE_AFTER`
//!   since its last success is disabled and its owner notified.
//! - A rotation keeps the previous secret signing beside the new one for
//!   `WEBHOOK_ROTATION_GRACE`; a delivery can be re-sent by hand.

pub mod relay;
pub mod routes;
pub mod send;
pub mod signing;
pub mod store;
pub mod url;

use std::time::Duration;

use common::config::{ConfigError, Env};
use common::jobs::Backoff;

/// The job kind that carries one delivery.
pub const JOB_KIND: &str = "notifications.webhook";

/// `NOTIFICATIONS_WEBHOOK_*`.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// `host:port`s that may take plain http, internal or not.
    pub http_allowed: Vec<String>,
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// One attempt, connecting included.
    pub timeout: Duration,
    pub disable_after: Duration,
    pub rotation_grace: Duration,
    pub max_per_user: usize,
    /// Deliveries in flight per replica.
    pub concurrency: usize,
    /// How long finished deliveries (and their attempts) are kept.
    pub retention: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            http_allowed: Vec::new(),
            max_attempts: 12,
            backoff: Backoff {
                base: Duration::from_secs(30),
                max: Duration::from_secs(6 * 3600),
            },
            timeout: Duration::from_secs(10),
            disable_after: Duration::from_secs(24 * 3600),
            rotation_grace: Duration::from_secs(24 * 3600),
            max_per_user: 10,
            concurrency: 16,
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl WebhookSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = Self::default();
        let allowed: String = env.get("WEBHOOK_HTTP_ALLOWED", String::new())?;
        let http_allowed = allowed
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if let Some(bad) = http_allowed.iter().find(|entry| {
            entry
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        }) {
            return Err(ConfigError::Invalid {
                var: env.var_name("WEBHOOK_HTTP_ALLOWED"),
                value: bad.clone(),
                reason: "entries are host:port, comma-separated".into(),
            });
        }
        let settings = Self {
            http_allowed,
            max_attempts: env.get("WEBHOOK_MAX_ATTEMPTS", d.max_attempts)?,
            backoff: Backoff {
                base: env.get("WEBHOOK_RETRY_BASE", d.backoff.base)?,
                max: env.get("WEBHOOK_RETRY_MAX", d.backoff.max)?,
            },
            timeout: env.get("WEBHOOK_TIMEOUT", d.timeout)?,
            disable_after: env.get("WEBHOOK_DISABLE_AFTER", d.disable_after)?,
            rotation_grace: env.get("WEBHOOK_ROTATION_GRACE", d.rotation_grace)?,
            max_per_user: env.get("WEBHOOK_MAX_PER_USER", d.max_per_user)?,
            concurrency: env.get("WEBHOOK_CONCURRENCY", d.concurrency)?,
            retention: env.get("WEBHOOK_RETENTION", d.retention)?,
        };
        if settings.max_attempts == 0 || settings.timeout.is_zero() || settings.concurrency == 0 {
            return Err(ConfigError::Invalid {
                var: env.var_name("WEBHOOK_MAX_ATTEMPTS"),
                value: settings.max_attempts.to_string(),
                reason: "attempts, the timeout and the concurrency must be at least 1".into(),
            });
        }
        Ok(settings)
    }
}
