//! Shutdown signals.
//!
//! A service runs until [`signal`] resolves (SIGTERM from an orchestrator or
//! SIGINT from a terminal); the server host then stops accepting, drains,
//! and deregisters. Several services in one process share one
//! [`CancellationToken`] so a single signal stops them all.

pub use tokio_util::sync::CancellationToken;

/// Which signal asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
}

/// Resolves on the first SIGTERM or SIGINT.
///
/// The handlers are installed when this is *called*, not when the future is
/// first polled, so a signal that arrives in between is not missed.
pub fn signal() -> impl std::future::Future<Output = Signal> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => Signal::Terminate,
                _ = int.recv() => Signal::Interrupt,
            },
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "cannot install signal handlers; stop the service with SIGKILL");
                std::future::pending().await
            }
        }
    }
}

/// A token cancelled by the first shutdown signal.
pub fn token_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    let received = signal();
    tokio::spawn(async move {
        let received = received.await;
        tracing::info!(signal = ?received, "shutdown requested");
        trigger.cancel();
    });
    token
}
