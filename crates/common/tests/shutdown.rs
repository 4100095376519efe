//! SIGTERM while a request is in flight: the request completes, new
//! connections are refused, and the host returns cleanly.
//!
//! This file is its own test binary with a single test, because it sends a
//! real SIGTERM to its own process.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use common::config::ServiceConfig;
use common::server::ServiceHost;
use tokio::sync::{Notify, mpsc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_refuses_new_connections() {
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Notify::new());
    let handler_release = release.clone();

    let host = ServiceHost::builder(ServiceConfig::ephemeral("shutdown-test", true))
        .http(move |cfg| {
            let started = started_tx.clone();
            let release = handler_release.clone();
            cfg.app_data(web::Data::new((started, release))).route(
                "/slow",
                web::get().to(
                    |state: web::Data<(mpsc::UnboundedSender<()>, Arc<Notify>)>| async move {
                        let _ = state.0.send(());
                        state.1.notified().await;
                        HttpResponse::Ok().body("finished")
                    },
                ),
            );
        })
        .build()
        .unwrap();
    let addr = host.http_addr();
    // Handlers are installed now, before any request, not on first poll.
    let sigterm = common::shutdown::signal();
    let running = tokio::spawn(host.run_until_stopped(async move {
        sigterm.await;
    }));

    let in_flight = tokio::spawn(async move {
        reqwest::get(format!("http://{addr}/slow"))
            .await?
            .text()
            .await
    });
    tokio::time::timeout(Duration::from_secs(10), started_rx.recv())
        .await
        .expect("slow request reached the handler");

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // The listener closes promptly while the slow request is still held.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            // Refused, or reset when the connection was still queued in the
            // backlog as the listener closed: either way, never served.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                break;
            }
            Err(e) => panic!("unexpected connect error: {e}"),
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "new connections still accepted after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        !in_flight.is_finished(),
        "the in-flight request must still be running"
    );

    release.notify_one();
    let body = in_flight
        .await
        .unwrap()
        .expect("in-flight request completed");
    assert_eq!(body, "finished");

    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("host stops after draining")
        .unwrap()
        .expect("clean shutdown");
}
