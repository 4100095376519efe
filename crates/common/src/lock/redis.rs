//! Locks in Redis: `SET lock:{name} <token> NX PX <lease>` and the next
//! fencing token in `lock:{name}:fence`, taken together by one script; extend
//! and release compare the token first (compare-and-extend,
//! compare-and-delete), so only the holder can. Both keys carry the name
//! as their hash tag: one slot, so the scripts run on a Redis Cluster too.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::scripts::Script;

use super::{LockBackend, LockError};

/// The fencing token is the larger of the primary's clock (µs) and the
/// last token + 1: a failover that lost the last token (replication is
/// asynchronous) still hands out a larger one, as long as the new primary's
/// clock is not behind the old one's by more than the failover took.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local now = redis.call('TIME')
  local micros = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  local token = math.max(micros, last + 1)
  redis.call('SET', KEYS[2], string.format('%.0f', token))
  return token
end
return false
";

const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub struct RedisLocks {
    client: Client,
    prefix: String,
    acquire: Script,
    extend: Script,
    release: Script,
}

fn unavailable(error: fred::error::Error) -> LockError {
    LockError::Unavailable(Box::new(error))
}

fn millis(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX).max(1)
}

impl RedisLocks {
    /// Locks under `prefix` (`locks:` say) on `client` (a single Redis or
    /// a cluster).
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            acquire: Script::from_lua(ACQUIRE),
            extend: Script::from_lua(EXTEND),
            release: Script::from_lua(RELEASE),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{{{name}}}", self.prefix)
    }
}

#[async_trait]
impl LockBackend for RedisLocks {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn try_lock(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
    ) -> Result<Option<u64>, LockError> {
        let key = self.key(name);
        let fence = format!("{key}:fence");
        let taken: Option<u64> = self
            .acquire
            .evalsha_with_reload(
                &self.client,
                vec![key, fence],
                vec![token.to_owned(), millis(lease).to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(taken)
    }

    async fn extend(&self, name: &str, token: &str, lease: Duration) -> Result<bool, LockError> {
        let extended: i64 = self
            .extend
            .evalsha_with_reload(
                &self.client,
                vec![self.key(name)],
                vec![token.to_owned(), millis(lease).to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(extended == 1)
    }

    async fn unlock(&self, name: &str, token: &str) -> Result<bool, LockError> {
        let released: i64 = self
            .release
            .evalsha_with_reload(&self.client, vec![self.key(name)], vec![token.to_owned()])
            .await
            .map_err(unavailable)?;
        Ok(released == 1)
    }
}
