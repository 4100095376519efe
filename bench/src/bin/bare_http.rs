//! The baseline for the service-host overhead benchmark: actix-web serving
//! the same `/health/live` answer as a platform service, with the same
//! worker count, but without the host's middleware (request metrics,
//! tracing spans, trace-context extraction). Any other path gets the same
//! small body, which makes it the upstream of the gateway-vs-nginx run.
//!
//! `bare-http <addr> <workers>`

use actix_web::{App, HttpResponse, HttpServer, web};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".to_owned());
    let workers = args.next().and_then(|w| w.parse().ok()).unwrap_or(1);
    HttpServer::new(|| {
        App::new()
            .route(
                "/health/live",
                web::get().to(|| async {
                    HttpResponse::Ok().json(serde_json::json!({ "status": "alive" }))
                }),
            )
            .default_service(web::to(|| async {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(r#"{"status":"alive"}"#)
            }))
    })
    .workers(workers)
    .bind(addr)?
    .run()
    .await
}
