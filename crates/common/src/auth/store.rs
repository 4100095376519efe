//! What outlives a token's signature: revoked token ids and refresh
//! families, shared by every gateway replica through Redis (feature
//! `redis`) or kept in process when the platform runs embedded.
//!
//! A refresh family is every refresh token issued since one sign-in; only
//! its newest token may be exchanged. Presenting an older one means two
//! parties hold the family's tokens (one of them stole it), so the whole
//! family is revoked: the next refresh of either fails and the user signs
//! in again (OAuth 2.0 Security BCP, refresh token rotation). Two refreshes
//! racing from one client look the same and end the same way.
//!
//! Keys are `auth:{<family>}:...` so that a family's keys share one Redis
//! Cluster slot and are read in one command.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

/// The store did not answer: callers decide whether that fails open or
/// closed.
#[derive(Debug, thiserror::Error)]
#[error("the token store is unavailable: {0}")]
pub struct StoreError(pub String);

/// What a refresh did to its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was the newest; `next` replaces it.
    Rotated,
    /// An older token was presented: the family is revoked now.
    Reused,
    /// The family was revoked, has expired or never existed.
    Unknown,
}

#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Refuses the token `jti` of `family` for `ttl` (the rest of its life).
    async fn revoke(&self, family: &str, jti: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Whether `jti`, or the whole `family`, has been revoked.
    async fn is_revoked(&self, family: &str, jti: &str) -> Result<bool, StoreError>;

    /// A new family whose newest refresh token is `jti`.
    async fn start_family(&self, family: &str, jti: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Exchanges `presented` for `next` when it is the family's newest.
    async fn rotate(
        &self,
        family: &str,
        presented: &str,
        next: &str,
        ttl: Duration,
    ) -> Result<Rotation, StoreError>;

    /// Ends the family (logout, reuse): no token of it is accepted again.
    async fn revoke_family(&self, family: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Keeps `value` under the single-use `ticket` for `ttl`.
    async fn put_ticket(&self, ticket: &str, value: &str, ttl: Duration) -> Result<(), StoreError>;

    /// `ticket`'s value, removed in the same step: of two redemptions
    /// racing, on any replicas, exactly one gets it.
    async fn take_ticket(&self, ticket: &str) -> Result<Option<String>, StoreError>;
}

/// Tickets are kept under their digest: whoever reads the store (a
/// backup, `MONITOR`) learns nothing that could be redeemed.
fn ticket_key(ticket: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(ticket.as_bytes());
    format!(
        "auth:ticket:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

fn current_key(family: &str) -> String {
    format!("auth:{{{family}}}:current")
}

fn family_revoked_key(family: &str) -> String {
    format!("auth:{{{family}}}:revoked")
}

fn jti_revoked_key(family: &str, jti: &str) -> String {
    format!("auth:{{{family}}}:jti:{jti}")
}

/// The in-process store: one replica's memory, for the embedded platform.
/// Entries leave when they expire (swept as the map grows), so memory is
/// bounded by the tokens revoked within one refresh lifetime.
#[derive(Default)]
pub struct MemoryTokenStore {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, (String, Instant)>,
    swept_at_len: usize,
}

impl Entries {
    fn get(&self, key: &str) -> Option<&str> {
        self.map
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(value, _)| value.as_str())
    }

    fn set(&mut self, key: String, value: &str, ttl: Duration) {
        if self.map.len() >= self.swept_at_len.saturating_mul(2).max(1024) {
            let now = Instant::now();
            self.map.retain(|_, (_, until)| *until > now);
            self.swept_at_len = self.map.len();
        }
        self.map
            .insert(key, (value.to_owned(), Instant::now() + ttl));
    }
}

impl MemoryTokenStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn revoke(&self, family: &str, jti: &str, ttl: Duration) -> Result<(), StoreError> {
        self.entries().set(jti_revoked_key(family, jti), "1", ttl);
        Ok(())
    }

    async fn is_revoked(&self, family: &str, jti: &str) -> Result<bool, StoreError> {
        let entries = self.entries();
        Ok(entries.get(&jti_revoked_key(family, jti)).is_some()
            || entries.get(&family_revoked_key(family)).is_some())
    }

    async fn start_family(&self, family: &str, jti: &str, ttl: Duration) -> Result<(), StoreError> {
        self.entries().set(current_key(family), jti, ttl);
        Ok(())
    }

    async fn rotate(
        &self,
        family: &str,
        presented: &str,
        next: &str,
        ttl: Duration,
    ) -> Result<Rotation, StoreError> {
        let mut entries = self.entries();
        if entries.get(&family_revoked_key(family)).is_some() {
            return Ok(Rotation::Unknown);
        }
        Ok(match entries.get(&current_key(family)) {
            Some(current) if current == presented => {
                entries.set(current_key(family), next, ttl);
                Rotation::Rotated
            }
            Some(_) => {
                entries.map.remove(&current_key(family));
                entries.set(family_revoked_key(family), "1", ttl);
                Rotation::Reused
            }
            None => Rotation::Unknown,
        })
    }

    async fn revoke_family(&self, family: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut entries = self.entries();
        entries.map.remove(&current_key(family));
        entries.set(family_revoked_key(family), "1", ttl);
        Ok(())
    }

    async fn put_ticket(&self, ticket: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        self.entries().set(ticket_key(ticket), value, ttl);
        Ok(())
    }

    async fn take_ticket(&self, ticket: &str) -> Result<Option<String>, StoreError> {
        let mut entries = self.entries();
        let key = ticket_key(ticket);
        let live = entries.get(&key).is_some();
        let taken = entries.map.remove(&key).map(|(value, _)| value);
        Ok(taken.filter(|_| live))
    }
}

#[cfg(feature = "redis")]
pub use self::redis::RedisTokenStore;

#[cfg(feature = "redis")]
mod redis {
    use std::time::Duration;

    use async_trait::async_trait;
    use fred::prelude::*;
    use fred::types::scripts::Script;
    use resilience::fail_fast::FailFast;

    use super::{
        Rotation, StoreError, TokenStore, current_key, family_revoked_key, jti_revoked_key,
        ticket_key,
    };

    /// Compare-and-swap of a family's newest token; a stale one revokes the
    /// family. One script, so two replicas cannot both rotate.
    const ROTATE: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 0
end
if current then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  return 1
end
return 2
"#;

    /// The store in Redis, shared by every replica, behind a fail-fast
    /// guard: while Redis is down every call fails at once (refreshes are
    /// refused, revocations go unchecked as `check` decides) instead of
    /// each authenticated request waiting out the command timeout.
    pub struct RedisTokenStore {
        raw: Raw,
        guard: FailFast,
    }

    struct Raw {
        client: Client,
        rotate: Script,
    }

    impl RedisTokenStore {
        pub fn new(client: Client) -> Self {
            let guard = crate::redis::guard(&client, "tokens");
            Self {
                raw: Raw {
                    client,
                    rotate: Script::from_lua(ROTATE),
                },
                guard,
            }
        }

        async fn guarded<T>(
            &self,
            call: impl std::future::Future<Output = Result<T, StoreError>>,
        ) -> Result<T, StoreError> {
            if !self.guard.allow() {
                return Err(StoreError("Redis is down; not asked".into()));
            }
            let outcome = call.await;
            match &outcome {
                Ok(_) => self.guard.succeeded(),
                Err(error) => self.guard.failed(error),
            }
            outcome
        }
    }

    #[async_trait]
    impl TokenStore for RedisTokenStore {
        async fn revoke(&self, family: &str, jti: &str, ttl: Duration) -> Result<(), StoreError> {
            self.guarded(self.raw.revoke(family, jti, ttl)).await
        }

        async fn is_revoked(&self, family: &str, jti: &str) -> Result<bool, StoreError> {
            self.guarded(self.raw.is_revoked(family, jti)).await
        }

        async fn start_family(
            &self,
            family: &str,
            jti: &str,
            ttl: Duration,
        ) -> Result<(), StoreError> {
            self.guarded(self.raw.start_family(family, jti, ttl)).await
        }

        async fn rotate(
            &self,
            family: &str,
            presented: &str,
            next: &str,
            ttl: Duration,
        ) -> Result<Rotation, StoreError> {
            self.guarded(self.raw.rotate(family, presented, next, ttl))
                .await
        }

        async fn revoke_family(&self, family: &str, ttl: Duration) -> Result<(), StoreError> {
            self.guarded(self.raw.revoke_family(family, ttl)).await
        }

        async fn put_ticket(
            &self,
            ticket: &str,
            value: &str,
            ttl: Duration,
        ) -> Result<(), StoreError> {
            self.guarded(self.raw.put_ticket(ticket, value, ttl)).await
        }

        async fn take_ticket(&self, ticket: &str) -> Result<Option<String>, StoreError> {
            self.guarded(self.raw.take_ticket(ticket)).await
        }
    }

    fn err(error: fred::error::Error) -> StoreError {
        StoreError(error.to_string())
    }

    fn millis(ttl: Duration) -> i64 {
        i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
    }

    #[async_trait]
    impl TokenStore for Raw {
        async fn revoke(&self, family: &str, jti: &str, ttl: Duration) -> Result<(), StoreError> {
            self.client
                .set::<(), _, _>(
                    jti_revoked_key(family, jti),
                    "1",
                    Some(Expiration::PX(millis(ttl))),
                    None,
                    false,
                )
                .await
                .map_err(err)
        }

        async fn is_revoked(&self, family: &str, jti: &str) -> Result<bool, StoreError> {
            // One slot ({family}), so one command even on a cluster.
            let found: u32 = self
                .client
                .exists(vec![
                    jti_revoked_key(family, jti),
                    family_revoked_key(family),
                ])
                .await
                .map_err(err)?;
            Ok(found > 0)
        }

        async fn start_family(
            &self,
            family: &str,
            jti: &str,
            ttl: Duration,
        ) -> Result<(), StoreError> {
            self.client
                .set::<(), _, _>(
                    current_key(family),
                    jti,
                    Some(Expiration::PX(millis(ttl))),
                    None,
                    false,
                )
                .await
                .map_err(err)
        }

        async fn rotate(
            &self,
            family: &str,
            presented: &str,
            next: &str,
            ttl: Duration,
        ) -> Result<Rotation, StoreError> {
            let outcome: i64 = self
                .rotate
                .evalsha_with_reload(
                    &self.client,
                    vec![current_key(family), family_revoked_key(family)],
                    vec![
                        presented.to_owned(),
                        next.to_owned(),
                        millis(ttl).to_string(),
                    ],
                )
                .await
                .map_err(err)?;
            Ok(match outcome {
                0 => Rotation::Rotated,
                1 => Rotation::Reused,
                _ => Rotation::Unknown,
            })
        }

        async fn revoke_family(&self, family: &str, ttl: Duration) -> Result<(), StoreError> {
            // The mark first: a rotation racing with this sees it and
            // fails, whatever it finds under `current`.
            let _: () = self
                .client
                .set(
                    family_revoked_key(family),
                    "1",
                    Some(Expiration::PX(millis(ttl))),
                    None,
                    false,
                )
                .await
                .map_err(err)?;
            self.client.del(current_key(family)).await.map_err(err)
        }

        async fn put_ticket(
            &self,
            ticket: &str,
            value: &str,
            ttl: Duration,
        ) -> Result<(), StoreError> {
            self.client
                .set::<(), _, _>(
                    ticket_key(ticket),
                    value,
                    Some(Expiration::PX(millis(ttl))),
                    None,
                    false,
                )
                .await
                .map_err(err)
        }

        async fn take_ticket(&self, ticket: &str) -> Result<Option<String>, StoreError> {
            // GETDEL (Redis 6.2): read and remove in one atomic step.
            self.client.getdel(ticket_key(ticket)).await.map_err(err)
        }
    }
}
