//! Rate limiting with GCRA (the generic cell rate algorithm).
//!
//! A quota of `limit` requests per `period` is a bucket that refills one
//! request every `period / limit`. Unlike a fixed window, there is no burst
//! at a window's edge: from idle a client gets `limit` requests at once,
//! then one per interval, never `2 × limit` across a boundary. The state
//! is one timestamp per key (the theoretical arrival time), so one atomic
//! read-modify-write decides, in process ([`MemoryLimiter`]) or in a Redis
//! script ([`RedisLimiter`]).

mod coalesce;
mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use coalesce::Coalescing;
pub use memory::MemoryLimiter;
pub use redis::RedisLimiter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period: Duration,
}

impl Quota {
    pub fn per_second(limit: u32) -> Self {
        Self {
            limit,
            period: Duration::from_secs(1),
        }
    }

    pub fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            period: Duration::from_secs(60),
        }
    }

    /// Time between two requests at the sustained rate, in microseconds.
    fn interval_us(&self) -> u64 {
        (u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX) / u64::from(self.limit.max(1)))
            .max(1)
    }

    fn period_us(&self) -> u64 {
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX)
    }
}

/// The verdict on one request, with what the rate-limit headers need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// Until the bucket is full again (`RateLimit-Reset`).
    pub reset_after: Duration,
    /// For a rejected request, when to try again (`Retry-After`).
    pub retry_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
#[error("the rate limiter's store is unavailable")]
pub struct LimiterError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one request from `key`'s quota if it has one.
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, LimiterError>;

    /// Decides `n` requests from `key` that arrived together, in order, in
    /// one atomic step: the first ones the quota holds pass, the rest are
    /// refused. Returns one decision per request.
    async fn check_batch(
        &self,
        key: &str,
        quota: Quota,
        n: u32,
    ) -> Result<Vec<Decision>, LimiterError>;

    /// Forgets `key`'s history: its next request starts from a full bucket.
    async fn reset(&self, key: &str) -> Result<(), LimiterError>;
}

/// GCRA for one request on microsecond timestamps: given the stored
/// theoretical arrival time (`None` for a new key) and now, the verdict
/// and the time to store (unchanged when rejected).
#[cfg(test)]
pub(crate) fn gcra(tat: Option<u64>, now: u64, quota: Quota) -> (Decision, u64) {
    let (mut decisions, tat) = gcra_batch(tat, now, quota, 1);
    (decisions.remove(0), tat)
}

/// GCRA for `n` requests arriving together: each admitted one moves the
/// theoretical arrival time on by one interval, as long as it stays within
/// one period of now. Returns the decisions in order and the time to store.
pub(crate) fn gcra_batch(tat: Option<u64>, now: u64, quota: Quota, n: u32) -> (Vec<Decision>, u64) {
    let tat = tat.unwrap_or(now).max(now);
    let headroom = (now + quota.period_us()).saturating_sub(tat);
    let admitted = u32::try_from(headroom / quota.interval_us())
        .unwrap_or(u32::MAX)
        .min(n);
    let decisions = batch_decisions(tat - now, admitted, n, quota);
    (decisions, tat + u64::from(admitted) * quota.interval_us())
}

/// The decisions for a batch of `n` of which the first `admitted` pass,
/// given how far the stored arrival time was ahead of now (`ahead_us`).
/// Shared by the in-process and the Redis limiter, whose script returns
/// just those two numbers.
pub(crate) fn batch_decisions(ahead_us: u64, admitted: u32, n: u32, quota: Quota) -> Vec<Decision> {
    let interval = quota.interval_us();
    let period = quota.period_us();
    let mut decisions = Vec::with_capacity(n as usize);
    for i in 1..=u64::from(admitted) {
        let next = ahead_us + i * interval;
        decisions.push(Decision {
            allowed: true,
            limit: quota.limit,
            remaining: u32::try_from(period.saturating_sub(next) / interval).unwrap_or(u32::MAX),
            reset_after: Duration::from_micros(next),
            retry_after: None,
        });
    }
    let last = ahead_us + u64::from(admitted) * interval;
    let refused = Decision {
        allowed: false,
        limit: quota.limit,
        remaining: 0,
        reset_after: Duration::from_micros(last),
        retry_after: Some(Duration::from_micros(
            (last + interval).saturating_sub(period).max(1),
        )),
    };
    decisions.resize(n as usize, refused);
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_idle_exactly_limit_pass_then_one_per_interval() {
        let quota = Quota::per_second(5);
        let mut tat = None;
        let now = 1_000_000_000;
        for expected_remaining in [4, 3, 2, 1, 0] {
            let (d, t) = gcra(tat, now, quota);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = Some(t);
        }
        let (rejected, t) = gcra(tat, now, quota);
        assert!(!rejected.allowed);
        assert_eq!(rejected.retry_after, Some(Duration::from_millis(200)));
        assert_eq!(Some(t), tat, "a rejection changes nothing");
        // One interval later, exactly one more.
        let later = now + 200_000;
        let (refilled, t2) = gcra(tat, later, quota);
        assert!(refilled.allowed);
        assert!(!gcra(Some(t2), later, quota).0.allowed);
    }

    #[test]
    fn no_double_burst_across_a_window_edge() {
        // A fixed window would allow 5 at 0.99 s and 5 more at 1.01 s.
        let quota = Quota::per_second(5);
        let mut tat = None;
        let mut allowed = 0;
        for step in 0..40u64 {
            let now = 990_000 + step * 1_000; // 0.990 s .. 1.029 s
            let (d, t) = gcra(tat, now, quota);
            if d.allowed {
                allowed += 1;
                tat = Some(t);
            }
        }
        assert_eq!(allowed, 5, "the 40 ms across the edge refill nothing");
    }

    #[test]
    fn a_batch_decides_like_the_same_requests_one_by_one() {
        let quota = Quota::per_second(5);
        let now = 1_000_000_000;
        let (batch, batch_tat) = gcra_batch(None, now, quota, 8);
        let mut tat = None;
        for (i, from_batch) in batch.iter().enumerate() {
            let (single, t) = gcra(tat, now, quota);
            assert_eq!(&single, from_batch, "request {i}");
            if single.allowed {
                tat = Some(t);
            }
        }
        assert_eq!(Some(batch_tat), tat);
        assert_eq!(batch.iter().filter(|d| d.allowed).count(), 5);
    }
}
