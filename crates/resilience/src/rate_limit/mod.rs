//! Rate limiting with GCRA (the generic cell rate algorithm).
//!
//! A quota of `limit` requests per `period` is a bucket that refills one
//! request every `period / limit`. Unlike a fixed window, there is no burst
//! at a window's edge: from idle a client gets `limit` requests at once,
//! then one per interval, never `2 × limit` across a boundary. The state
//! is one timestamp per key (the theoretical arrival time), so one atomic
//! read-modify-write decides, in process ([`MemoryLimiter`]) or in a Redis
//! script ([`RedisLimiter`]).

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

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

    /// Forgets `key`'s history: its next request starts from a full bucket.
    async fn reset(&self, key: &str) -> Result<(), LimiterError>;
}

/// GCRA on microsecond timestamps: given the stored theoretical arrival
/// time (`None` for a new key) and now, the verdict and the time to store
/// (unchanged when rejected).
pub(crate) fn gcra(tat: Option<u64>, now: u64, quota: Quota) -> (Decision, u64) {
    let interval = quota.interval_us();
    let period = quota.period_us();
    let tat = tat.unwrap_or(now).max(now);
    let next = tat.saturating_add(interval);
    let allow_at = next.saturating_sub(period);
    if now < allow_at {
        let decision = Decision {
            allowed: false,
            limit: quota.limit,
            remaining: 0,
            reset_after: Duration::from_micros(tat - now),
            retry_after: Some(Duration::from_micros(allow_at - now)),
        };
        return (decision, tat);
    }
    let remaining = (now + period).saturating_sub(next) / interval;
    let decision = Decision {
        allowed: true,
        limit: quota.limit,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_after: Duration::from_micros(next - now),
        retry_after: None,
    };
    (decision, next)
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
}
