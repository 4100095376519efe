//! The delivery job: one signed POST to the endpoint, recorded.

use std::sync::Arc;
use std::time::Instant;

use common::jobs::{JobFailure, JobRecord};

use super::relay::Job;
use super::store::{Outcome, Target};
use super::{WebhookSettings, signing, url};
use crate::App;
use crate::store::{Kind, NewNotification, Topic, now_ms};

/// The receiver's answer is not read beyond its status; a response this
/// slow to come is a failure.
async fn post(settings: &WebhookSettings, target: &Target, id: &str) -> Outcome {
    let started = Instant::now();
    let elapsed =
        |started: Instant| i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let failed = |error: String| Outcome {
        status: None,
        error: Some(error),
        duration_ms: elapsed(started),
    };
    // Checked again at each attempt: the name may resolve elsewhere now.
    let addresses = match url::check(&target.url, &settings.http_allowed).await {
        Ok(addresses) => addresses,
        // The address is for the operator's log only: echoed to the user
        // it would map the inside of the network.
        Err(refused @ url::Refused::Internal(ip)) => {
            tracing::warn!(%ip, webhook = target.webhook, "a webhook's host resolves inside the network");
            return failed(refused.public_reason().to_owned());
        }
        Err(refused) => return failed(refused.public_reason().to_owned()),
    };
    let Some(host) = ::url::Url::parse(&target.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
    else {
        return failed("not a URL".into());
    };
    // Only the vetted addresses: a second lookup could answer otherwise.
    let timeouts = common::clients::Timeouts {
        connect: settings.timeout,
        request: settings.timeout,
    };
    let client = match common::clients::http_pinned(timeouts, &host, &addresses) {
        Ok(client) => client,
        Err(error) => return failed(format!("cannot build a client: {error}")),
    };
    let timestamp = now_ms() / 1000;
    let body = target.payload.as_bytes();
    let signature = signing::signature_header(&target.secrets, id, timestamp, body);
    let sent = client
        .post(&target.url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(target.payload.clone())
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            Outcome {
                status: Some(status.as_u16()),
                error: (!status.is_success()).then(|| {
                    if status.is_redirection() {
                        "redirects are not followed".to_owned()
                    } else {
                        format!("the receiver answered {status}")
                    }
                }),
                duration_ms: elapsed(started),
            }
        }
        Err(error) => failed(if error.is_timeout() {
            "timed out".to_owned()
        } else if error.is_connect() {
            "cannot connect".to_owned()
        } else {
            "the request failed".to_owned()
        }),
    }
}

/// Runs one delivery job.
pub async fn run(app: Arc<App>, job: &JobRecord) -> Result<(), JobFailure> {
    let Job {
        delivery,
        generation,
    } = job.payload_as()?;
    let retry = |e: crate::store::StoreError| JobFailure::retry(common::exit::chain(&e));
    let Some(target) = app.store.target(&delivery).await.map_err(retry)? else {
        // Its endpoint was deleted.
        return Ok(());
    };
    if target.generation != generation {
        // Re-sent since: the newer job sends it.
        return Ok(());
    }
    if !target.enabled {
        app.store.skip_delivery(&delivery).await.map_err(retry)?;
        return Ok(());
    }
    let at = now_ms();
    let attempt = post(&app.webhooks, &target, &delivery).await;
    let succeeded = attempt.error.is_none();
    let last = job.attempts >= job.max_attempts;
    if succeeded {
        app.store
            .record_attempt(&delivery, &attempt, at, "delivered")
            .await
            .map_err(retry)?;
        app.store
            .endpoint_succeeded(target.webhook)
            .await
            .map_err(retry)?;
        metrics::counter!("notifications_webhook_deliveries_total", "outcome" => "delivered")
            .increment(1);
        return Ok(());
    }
    metrics::counter!("notifications_webhook_deliveries_total", "outcome" => "failed").increment(1);
    let disable_after = i64::try_from(app.webhooks.disable_after.as_millis()).unwrap_or(i64::MAX);
    // Attempts of a failing delivery come at most the longest backoff
    // apart: a longer silence means the endpoint was not being tried.
    let quiet = i64::try_from(app.webhooks.backoff.max.as_millis())
        .unwrap_or(i64::MAX)
        .saturating_mul(2);
    // 410 Gone: the receiver says the endpoint is no more (as Svix and
    // Standard Webhooks senders take it), so it is disabled at once.
    let gone = attempt.status == Some(410);
    let disabled = app
        .store
        .endpoint_failed(
            target.webhook,
            at,
            if gone { 0 } else { disable_after },
            quiet,
        )
        .await
        .map_err(retry)?;
    let dead = last || disabled;
    app.store
        .record_attempt(
            &delivery,
            &attempt,
            at,
            if dead { "dead" } else { "retrying" },
        )
        .await
        .map_err(retry)?;
    if disabled {
        metrics::counter!("notifications_webhooks_disabled_total").increment(1);
        tell_disabled(&app, &target, gone).await;
    }
    let error = attempt.error.unwrap_or_default();
    if dead {
        metrics::counter!("notifications_webhook_dead_lettered_total").increment(1);
    }
    if disabled {
        Err(JobFailure::permanent(format!(
            "the endpoint is disabled: {error}"
        )))
    } else {
        Err(JobFailure::retry(error))
    }
}

/// Tells the owner their endpoint was disabled (best effort: the
/// endpoint stays disabled either way, and they see it in the API).
async fn tell_disabled(app: &App, target: &Target, gone: bool) {
    let why = if gone {
        "answered 410 Gone".to_owned()
    } else {
        format!(
            "have failed for {}",
            humantime::format_duration(app.webhooks.disable_after)
        )
    };
    let notice = NewNotification {
        user_id: target.user,
        kind: Kind::Warning,
        topic: Topic::System,
        title: "Webhook disabled".into(),
        message: format!(
            "Deliveries to webhook {} ({}) {why}; it is disabled until you enable it again.",
            target.webhook,
            ::url::Url::parse(&target.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
    };
    if let Err(error) = app.notify(&notice).await {
        tracing::warn!(error = %common::exit::chain(&error), "cannot tell a user their webhook was disabled");
    }
}
