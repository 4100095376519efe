//! GCRA in Redis: the whole decision is one Lua script, so concurrent
//! gateway replicas never race on a key. Time comes from the Redis server
//! (`TIME`), so replicas with skewed clocks still agree.

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::scripts::Script;

use super::{Decision, LimiterError, Quota, RateLimiter, batch_decisions};

/// KEYS[1]: the client's key. ARGV[1]: interval (µs), ARGV[2]: period
/// (µs), ARGV[3]: how many requests to decide. Admits the first ones that
/// fit and returns {admitted, how far the stored time was ahead of now}, from
/// which [`batch_decisions`] derives every request's headers.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local admitted = math.floor((now + period - tat) / interval)
if admitted > n then admitted = n end
if admitted < 0 then admitted = 0 end
if admitted > 0 then
  local next = tat + admitted * interval
  redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
end
return {admitted, tat - now}
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

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str, quota: Quota) -> Result<Decision, LimiterError> {
        let mut decisions = self.check_batch(key, quota, 1).await?;
        Ok(decisions.remove(0))
    }

    async fn check_batch(
        &self,
        key: &str,
        quota: Quota,
        n: u32,
    ) -> Result<Vec<Decision>, LimiterError> {
        let args = vec![
            quota.interval_us().to_string(),
            quota.period_us().to_string(),
            n.to_string(),
        ];
        let reply: Vec<i64> = self
            .script
            .evalsha_with_reload(&self.client, format!("{}{key}", self.prefix), args)
            .await
            .map_err(|e| LimiterError(Box::new(e)))?;
        let [admitted, ahead] = reply[..] else {
            return Err(LimiterError(
                format!("unexpected script reply {reply:?}").into(),
            ));
        };
        let admitted = u32::try_from(admitted).unwrap_or(0).min(n);
        let ahead = u64::try_from(ahead).unwrap_or(0);
        Ok(batch_decisions(ahead, admitted, n, quota))
    }

    async fn reset(&self, key: &str) -> Result<(), LimiterError> {
        self.client
            .del::<(), _>(format!("{}{key}", self.prefix))
            .await
            .map_err(|e| LimiterError(Box::new(e)))
    }
}
