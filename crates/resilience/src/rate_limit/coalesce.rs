//! Request coalescing in front of a remote limiter.
//!
//! A busy client sends many requests at once, and deciding each with its
//! own Redis round trip makes the limiter, not the work, the bottleneck.
//! Here at most one decision per key is in flight: requests for a key that
//! arrive meanwhile wait together and are decided, in arrival order, by one
//! atomic [`RateLimiter::check_batch`] as soon as it returns. Nothing is
//! approximated (no local token leases that other replicas cannot see),
//! and a lone request goes straight through, so an idle key pays nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::{Decision, LimiterError, Quota, RateLimiter};

type Reply = oneshot::Sender<Result<Decision, Arc<LimiterError>>>;
/// Keys with a decision in flight, and who is waiting for the next.
type Waiting = Arc<Mutex<HashMap<String, Vec<(Quota, Reply)>>>>;

pub struct Coalescing<L> {
    inner: Arc<L>,
    waiting: Waiting,
}

impl<L: RateLimiter> Coalescing<L> {
    pub fn new(inner: L) -> Self {
        Self {
            inner: Arc::new(inner),
            waiting: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn inner(&self) -> &L {
        &self.inner
    }
}

fn shared(error: &Arc<LimiterError>) -> LimiterError {
    LimiterError(Box::new(error.clone()))
}

/// Decides batches for `key` until nobody waits any more, then marks the
/// key idle. Runs as its own task so a caller that goes away mid-flight
/// (a client disconnecting) never strands the ones queued behind it.
async fn drain<L: RateLimiter>(inner: Arc<L>, waiting: Waiting, key: String) {
    loop {
        let batch = {
            let mut waiting = waiting.lock().unwrap_or_else(|p| p.into_inner());
            match waiting.get_mut(&key) {
                Some(queue) if !queue.is_empty() => std::mem::take(queue),
                _ => {
                    waiting.remove(&key);
                    return;
                }
            }
        };
        // An override set meanwhile applies to the whole batch.
        let quota = batch
            .last()
            .map_or_else(|| Quota::per_second(1), |(q, _)| *q);
        let n = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        match inner.check_batch(&key, quota, n).await {
            Ok(decisions) => {
                for ((_, reply), decision) in batch.into_iter().zip(decisions) {
                    let _ = reply.send(Ok(decision));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for (_, reply) in batch {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Held by the request that leads a key: when it is done, or dropped
/// half-way, whoever queued behind it is handed to a drain task, or the key
/// is marked idle.
struct Lead<L: RateLimiter> {
    inner: Arc<L>,
    waiting: Waiting,
    key: String,
}

impl<L: RateLimiter> Drop for Lead<L> {
    fn drop(&mut self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let queued = waiting.get(&self.key).is_some_and(|q| !q.is_empty());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if queued => {
                drop(waiting);
                runtime.spawn(drain(
                    self.inner.clone(),
                    self.waiting.clone(),
                    std::mem::take(&mut self.key),
                ));
            }
            // Nobody waits, or the runtime is going away: the queued (if
            // any) see their reply channel close.
            _ => {
                waiting.remove(&self.key);
            }
        }
    }
}

#[async_trait]
impl<L: RateLimiter> RateLimiter for Coalescing<L> {
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, LimiterError> {
        let queued = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            match waiting.get_mut(key) {
                Some(queue) => {
                    let (tx, rx) = oneshot::channel();
                    queue.push((quota, tx));
                    Some(rx)
                }
                None => {
                    waiting.insert(key.to_owned(), Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = queued {
            return match rx.await {
                Ok(result) => result.map_err(|e| shared(&e)),
                Err(_) => Err(LimiterError("the rate limit batch was abandoned".into())),
            };
        }
        // This request leads: decided alone, right away.
        let _lead = Lead {
            inner: self.inner.clone(),
            waiting: self.waiting.clone(),
            key: key.to_owned(),
        };
        let mut decisions = self.inner.check_batch(key, quota, 1).await?;
        Ok(decisions.remove(0))
    }

    async fn check_batch(
        &self,
        key: &str,
        quota: Quota,
        n: u32,
    ) -> Result<Vec<Decision>, LimiterError> {
        self.inner.check_batch(key, quota, n).await
    }

    async fn reset(&self, key: &str) -> Result<(), LimiterError> {
        self.inner.reset(key).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::rate_limit::MemoryLimiter;

    /// A slow store that counts its round trips.
    struct Slow {
        store: MemoryLimiter,
        calls: AtomicU32,
    }

    #[async_trait]
    impl RateLimiter for Slow {
        async fn check(&self, key: &str, quota: Quota) -> Result<Decision, LimiterError> {
            let mut d = self.check_batch(key, quota, 1).await?;
            Ok(d.remove(0))
        }
        async fn check_batch(
            &self,
            key: &str,
            quota: Quota,
            n: u32,
        ) -> Result<Vec<Decision>, LimiterError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.store.check_batch(key, quota, n).await
        }
        async fn reset(&self, key: &str) -> Result<(), LimiterError> {
            self.store.reset(key).await
        }
    }

    fn slow() -> Arc<Coalescing<Slow>> {
        Arc::new(Coalescing::new(Slow {
            store: MemoryLimiter::new(Arc::new(ManualClock::default())),
            calls: AtomicU32::new(0),
        }))
    }

    #[tokio::test]
    async fn concurrent_requests_for_a_key_share_round_trips_and_stay_exact() {
        let limiter = slow();
        let quota = Quota::per_minute(10);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.check("ip:1", quota).await.unwrap() })
            })
            .collect();
        let mut allowed = 0;
        for task in tasks {
            allowed += u32::from(task.await.unwrap().allowed);
        }
        assert_eq!(allowed, 10, "exactly the quota passes");
        let calls = limiter.inner().calls.load(Ordering::SeqCst);
        assert!(calls <= 3, "50 requests took {calls} round trips");
        assert!(
            limiter.waiting.lock().unwrap().is_empty(),
            "the key is idle again"
        );
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_does_not_strand_the_queue() {
        let limiter = slow();
        let quota = Quota::per_minute(10);
        let leader = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.check("ip:1", quota).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let follower = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.check("ip:1", quota).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        leader.abort();
        let decided = tokio::time::timeout(Duration::from_secs(2), follower)
            .await
            .expect("the follower is answered")
            .unwrap()
            .unwrap();
        assert!(decided.allowed);
        // And the key works afterwards.
        assert!(limiter.check("ip:1", quota).await.unwrap().allowed);
    }
}
