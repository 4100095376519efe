use std::future::Future;
use std::time::Duration;

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `check` returns true, checking every few milliseconds.
///
/// # Panics
/// After `timeout`, with `what` in the message: a test that waited for
/// something that never happened says so instead of failing later at a
/// confusing assertion (or, worse, passing).
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_some(timeout, what, || {
        let ready = check();
        async move { ready.await.then_some(()) }
    })
    .await;
}

/// Waits until `check` returns `Some`, and returns what it held.
///
/// # Panics
/// After `timeout`, naming `what`.
pub async fn eventually_some<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // A check that hangs (a request to a server that never answers)
        // counts against the deadline too.
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Some(value)) => return value,
            Ok(None) if tokio::time::Instant::now() < deadline => {}
            _ => panic!("timed out after {timeout:?} waiting for {what}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_condition_that_becomes_true_returns() {
        let calls = AtomicU32::new(0);
        eventually(Duration::from_secs(5), "the third call", || async {
            calls.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let got = eventually_some(Duration::from_secs(5), "a value", || async { Some(7) }).await;
        assert_eq!(got, 7);
    }

    #[tokio::test]
    async fn a_timeout_panics_naming_what_was_awaited() {
        let waited = std::panic::AssertUnwindSafe(eventually(
            Duration::from_millis(60),
            "the users service to register",
            || async { false },
        ))
        .catch_unwind()
        .await;
        let panic = waited.expect_err("a condition that never holds must panic");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert_eq!(
            message,
            "timed out after 60ms waiting for the users service to register"
        );
    }

    #[tokio::test]
    async fn a_check_that_never_returns_still_times_out() {
        let waited = std::panic::AssertUnwindSafe(eventually(
            Duration::from_millis(60),
            "an answer",
            std::future::pending::<bool>,
        ))
        .catch_unwind()
        .await;
        assert!(waited.is_err(), "the deadline bounds a hanging check");
    }
}
