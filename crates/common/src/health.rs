//! Liveness and readiness.
//!
//! `/health/live` answers 200 while the process can serve HTTP at all.
//! `/health/ready` answers 200 only when every backend the service needs
//! answers its check, and 503 (with what failed) otherwise, including while
//! the service is shutting down so load balancers stop sending new work
//! before connections close. The gRPC health service reports the same
//! state, kept in step by the server host.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use async_trait::async_trait;
use serde::Serialize;

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One backend a service needs in order to be ready.
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Short name shown in the readiness report (`discovery`, `postgres`).
    fn name(&self) -> &str;

    async fn check(&self) -> Result<(), String>;
}

/// The set of checks and the shutting-down flag, shared by the HTTP and
/// gRPC health endpoints.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    shutting_down: Arc<AtomicBool>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ReadinessReport {
    pub ready: bool,
    pub checks: Vec<CheckOutcome>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CheckOutcome {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Health {
    pub fn new(checks: Vec<Arc<dyn ReadinessCheck>>) -> Self {
        Self {
            checks: Arc::new(checks),
            shutting_down: Arc::default(),
        }
    }

    pub fn mark_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Runs every check concurrently, each bounded by a timeout.
    pub async fn readiness(&self) -> ReadinessReport {
        let outcomes = futures_util::future::join_all(self.checks.iter().map(|check| async move {
            let result = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            CheckOutcome {
                name: check.name().to_owned(),
                ok: result.is_ok(),
                error: result.err(),
            }
        }))
        .await;
        let mut checks = outcomes;
        if self.is_shutting_down() {
            checks.push(CheckOutcome {
                name: "shutdown".into(),
                ok: false,
                error: Some("the service is shutting down".into()),
            });
        }
        ReadinessReport {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

/// Mounts `/health/live` and `/health/ready`; needs `web::Data<Health>`.
/// The public port's health routes: readiness says ready or not, and
/// nothing about the backends (their names and errors are for operators).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready_summary));
}

/// The admin listener's health routes: readiness with every check and its
/// error.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

async fn ready_summary(health: web::Data<Health>) -> HttpResponse {
    let report = health.readiness().await;
    let body = serde_json::json!({ "ready": report.ready });
    if report.ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "alive" }))
}

async fn ready(health: web::Data<Health>) -> HttpResponse {
    let report = health.readiness().await;
    if report.ready {
        HttpResponse::Ok().json(report)
    } else {
        HttpResponse::ServiceUnavailable().json(report)
    }
}

/// Readiness of the service-discovery backend.
pub struct DiscoveryCheck(pub Arc<dyn crate::discovery::Registry>);

#[async_trait]
impl ReadinessCheck for DiscoveryCheck {
    fn name(&self) -> &str {
        "discovery"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{App, test};

    use super::*;

    struct Fixed(&'static str, Result<(), String>);

    #[async_trait]
    impl ReadinessCheck for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        async fn check(&self) -> Result<(), String> {
            self.1.clone()
        }
    }

    struct Hangs;

    #[async_trait]
    impl ReadinessCheck for Hangs {
        fn name(&self) -> &str {
            "hangs"
        }
        async fn check(&self) -> Result<(), String> {
            std::future::pending().await
        }
    }

    /// Through the admin listener's routes, which tell the details.
    async fn get(health: Health, path: &str) -> (u16, serde_json::Value) {
        get_from(admin_routes, health, path).await
    }

    async fn get_from(
        routes: fn(&mut web::ServiceConfig),
        health: Health,
        path: &str,
    ) -> (u16, serde_json::Value) {
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(health))
                .configure(routes),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        let status = res.status().as_u16();
        (status, test::read_body_json(res).await)
    }

    #[tokio::test]
    async fn ready_only_when_every_backend_answers() {
        let (status, body) = get(
            Health::new(vec![Arc::new(Fixed("db", Ok(())))]),
            "/health/ready",
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["ready"], true);

        let failing = Health::new(vec![
            Arc::new(Fixed("db", Ok(()))),
            Arc::new(Fixed("cache", Err("connection refused".into()))),
        ]);
        let (status, body) = get(failing, "/health/ready").await;
        assert_eq!(status, 503);
        assert_eq!(body["checks"][1]["name"], "cache");
        assert_eq!(body["checks"][1]["error"], "connection refused");
    }

    #[tokio::test]
    async fn the_public_readiness_tells_nothing_about_the_backends() {
        let failing = Health::new(vec![Arc::new(Fixed(
            "database",
            Err("password authentication failed for user admin at 10.0.0.5".into()),
        ))]);
        let (status, body) = get_from(routes, failing, "/health/ready").await;
        assert_eq!(status, 503);
        assert_eq!(body, serde_json::json!({ "ready": false }));
    }

    #[tokio::test]
    async fn liveness_does_not_depend_on_backends() {
        let failing = Health::new(vec![Arc::new(Fixed("db", Err("down".into())))]);
        let (status, _) = get(failing, "/health/live").await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn shutting_down_is_not_ready() {
        let health = Health::new(vec![]);
        health.mark_shutting_down();
        let (status, body) = get(health, "/health/ready").await;
        assert_eq!(status, 503);
        assert_eq!(body["checks"][0]["name"], "shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_times_out_as_not_ready() {
        let report = Health::new(vec![Arc::new(Hangs)]).readiness().await;
        assert!(!report.ready);
        assert!(
            report.checks[0]
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("no answer")
        );
    }
}
