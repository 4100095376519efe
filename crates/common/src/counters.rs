//! Atomic counters shared by every replica: the seed's distributed
//! counters, for statistics and windowed quotas. A counter lives for a TTL
//! from its first increment; a windowed counter counts within fixed
//! windows (`uploads per user per hour`), each window its own key that
//! expires after it. Redis (feature `redis`: one script per increment, the
//! counter's name as hash tag so a cluster keeps it in one slot) or in
//! process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

/// Names are at most this long (they become Redis keys).
pub const MAX_NAME_BYTES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("invalid counter: {0}")]
    Invalid(String),
    #[error("the counter store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[async_trait]
pub trait CounterBackend: Send + Sync + 'static {
    fn backend(&self) -> &'static str;

    /// Adds `by` to `key`, which lives `ttl` from its first increment; the
    /// new value.
    async fn add(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, CounterError>;

    /// The value of `key` (0 when absent or expired).
    async fn value(&self, key: &str) -> Result<i64, CounterError>;
}

#[derive(Clone)]
pub struct Counters {
    backend: Arc<dyn CounterBackend>,
}

fn check(name: &str) -> Result<(), CounterError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(CounterError::Invalid(format!(
            "a counter's name is 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

fn window_start(window: Duration) -> u128 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let width = window.as_millis().max(1);
    now - now % width
}

impl Counters {
    pub fn new(backend: Arc<dyn CounterBackend>) -> Self {
        Self { backend }
    }

    pub fn in_process() -> Self {
        Self::new(Arc::new(MemoryCounters::default()))
    }

    /// Adds `by` to `name`, which lives `ttl` from its first increment.
    pub async fn add(&self, name: &str, by: i64, ttl: Duration) -> Result<i64, CounterError> {
        check(name)?;
        self.backend.add(&format!("{{{name}}}"), by, ttl).await
    }

    pub async fn value(&self, name: &str) -> Result<i64, CounterError> {
        check(name)?;
        self.backend.value(&format!("{{{name}}}")).await
    }

    /// Adds `by` to `name`'s count in the current fixed `window` (aligned
    /// to the epoch, so every replica agrees where windows start); the
    /// window's count so far.
    pub async fn add_in_window(
        &self,
        name: &str,
        by: i64,
        window: Duration,
    ) -> Result<i64, CounterError> {
        check(name)?;
        if window < Duration::from_millis(1) {
            return Err(CounterError::Invalid("a window is at least 1 ms".into()));
        }
        let key = format!("{{{name}}}:w{}", window_start(window));
        // Kept one window past its end, for readers just behind the clock.
        self.backend.add(&key, by, window * 2).await
    }

    /// `name`'s count in the current `window`.
    pub async fn in_window(&self, name: &str, window: Duration) -> Result<i64, CounterError> {
        check(name)?;
        let key = format!("{{{name}}}:w{}", window_start(window));
        self.backend.value(&key).await
    }
}

/// Counters in this process's memory, expired ones swept as they add up.
#[derive(Default)]
pub struct MemoryCounters {
    values: Mutex<HashMap<String, (i64, Instant)>>,
}

#[async_trait]
impl CounterBackend for MemoryCounters {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn add(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, CounterError> {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if values.len() >= 100_000 {
            values.retain(|_, (_, until)| *until > now);
        }
        let entry = values.entry(key.to_owned()).or_insert((0, now + ttl));
        if entry.1 <= now {
            *entry = (0, now + ttl);
        }
        entry.0 = entry.0.saturating_add(by);
        Ok(entry.0)
    }

    async fn value(&self, key: &str) -> Result<i64, CounterError> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        Ok(values
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map_or(0, |(v, _)| *v))
    }
}

#[cfg(feature = "redis")]
pub use redis_backend::RedisCounters;

#[cfg(feature = "redis")]
mod redis_backend {
    use std::time::Duration;

    use async_trait::async_trait;
    use fred::prelude::*;
    use fred::types::scripts::Script;

    use super::{CounterBackend, CounterError};

    /// INCRBY, and the TTL set when the key has none (it was just made):
    /// one script, so a crash cannot leave a counter that never expires.
    const ADD: &str = r"
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
";

    pub struct RedisCounters {
        client: Client,
        prefix: String,
        add: Script,
    }

    impl RedisCounters {
        pub fn new(client: Client, prefix: impl Into<String>) -> Self {
            Self {
                client,
                prefix: prefix.into(),
                add: Script::from_lua(ADD),
            }
        }
    }

    fn unavailable(error: fred::error::Error) -> CounterError {
        CounterError::Unavailable(Box::new(error))
    }

    #[async_trait]
    impl CounterBackend for RedisCounters {
        fn backend(&self) -> &'static str {
            "redis"
        }

        async fn add(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, CounterError> {
            let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
            self.add
                .evalsha_with_reload(
                    &self.client,
                    vec![format!("{}{key}", self.prefix)],
                    vec![by.to_string(), ttl.to_string()],
                )
                .await
                .map_err(unavailable)
        }

        async fn value(&self, key: &str) -> Result<i64, CounterError> {
            let value: Option<i64> = self
                .client
                .get(format!("{}{key}", self.prefix))
                .await
                .map_err(unavailable)?;
            Ok(value.unwrap_or(0))
        }
    }
}
