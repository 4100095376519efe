use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

/// Runs `suite` against every backend, one after the other, and panics
/// naming the backend that failed (and with its message), so one contract
/// test proves the same behaviour of the production backend and of its
/// embedded twin.
///
/// Every backend is tried even when an earlier one fails, so a run shows
/// whether a bug is in one backend or in the contract.
pub async fn contract<B, F, Fut>(backends: Vec<(&'static str, B)>, mut suite: F)
where
    F: FnMut(&'static str, B) -> Fut,
    Fut: Future<Output = ()>,
{
    assert!(
        !backends.is_empty(),
        "a contract needs at least one backend"
    );
    let mut failures = Vec::new();
    for (name, backend) in backends {
        if let Err(panic) = AssertUnwindSafe(suite(name, backend)).catch_unwind().await {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(no message)".to_owned());
            failures.push(format!("{name}: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "the contract failed on {} backend(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_backend_is_named_and_the_others_still_run() {
        let ran = std::sync::Mutex::new(Vec::new());
        let result = AssertUnwindSafe(contract(
            vec![("memory", 1), ("redis", 2), ("disk", 3)],
            |name, n| {
                ran.lock().unwrap().push(name);
                async move { assert_ne!(n, 2, "two is not allowed") }
            },
        ))
        .catch_unwind()
        .await;
        let message = result
            .expect_err("one backend failed")
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains("1 backend(s)"), "{message}");
        assert!(message.contains("redis: assertion"), "{message}");
        assert!(message.contains("two is not allowed"), "{message}");
        assert_eq!(*ran.lock().unwrap(), ["memory", "redis", "disk"]);
    }
}
