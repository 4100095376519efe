//! GCRA in Redis: the whole decision is one Lua script, so concurrent
//! gateway replicas never race on a key. Time comes from the Redis server
//! (`TIME`), so replicas with skewed clocks still agree.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::scripts::Script;

use super::{Decision, LimiterError, Quota, RateLimiter};

/// KEYS[1]: the client's key. ARGV[1]: interval (µs), ARGV[2]: period (µs).
/// Returns {allowed, remaining, retry_after_us, reset_after_us}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next = tat + interval
local allow_at = next - period
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
return {1, math.floor((now + period - next) / interval), 0, next - now}
";

pub struct RedisLimiter {
    client: Client,
    script: Script,
    prefix: String,
}

impl RedisLimiter {
    /// Keys are stored as `<prefix><key>`.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            script: Script::from_lua(GCRA),
            prefix: prefix.into(),
        }
    }
}

fn micros(v: i64) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, LimiterError> {
        let args = vec![
            quota.interval_us().to_string(),
            quota.period_us().to_string(),
        ];
        let reply: Vec<i64> = self
            .script
            .evalsha_with_reload(&self.client, format!("{}{key}", self.prefix), args)
            .await
            .map_err(|e| LimiterError(Box::new(e)))?;
        let [allowed, remaining, retry_after, reset_after] = reply[..] else {
            return Err(LimiterError(
                format!("unexpected script reply {reply:?}").into(),
            ));
        };
        Ok(Decision {
            allowed: allowed == 1,
            limit: quota.limit,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset_after: micros(reset_after),
            retry_after: (allowed != 1).then(|| micros(retry_after)),
        })
    }

    async fn reset(&self, key: &str) -> Result<(), LimiterError> {
        self.client
            .del::<(), _>(format!("{}{key}", self.prefix))
            .await
            .map_err(|e| LimiterError(Box::new(e)))
    }
}
