//! Locks in this process's memory: the embedded twin, with the same
//! leases and fencing tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{LockBackend, LockError};

#[derive(Default)]
pub struct MemoryLocks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    held: HashMap<String, (String, Instant)>,
    fences: HashMap<String, u64>,
}

impl MemoryLocks {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl LockBackend for MemoryLocks {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn try_lock(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
    ) -> Result<Option<u64>, LockError> {
        let mut state = self.state();
        let now = Instant::now();
        if state.held.get(name).is_some_and(|(_, until)| *until > now) {
            return Ok(None);
        }
        // Expired leases are swept once they add up, not on every call.
        if state.held.len() >= 10_000 {
            state.held.retain(|_, (_, until)| *until > now);
        }
        state
            .held
            .insert(name.to_owned(), (token.to_owned(), now + lease));
        // As the Redis backend: a clock in µs, never below the last + 1.
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let fence = state.fences.entry(name.to_owned()).or_default();
        *fence = micros.max(*fence + 1);
        Ok(Some(*fence))
    }

    async fn extend(&self, name: &str, token: &str, lease: Duration) -> Result<bool, LockError> {
        let mut state = self.state();
        let now = Instant::now();
        match state.held.get_mut(name) {
            Some((holder, until)) if holder == token && *until > now => {
                *until = now + lease;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn unlock(&self, name: &str, token: &str) -> Result<bool, LockError> {
        let mut state = self.state();
        let held = state
            .held
            .get(name)
            .is_some_and(|(holder, until)| holder == token && *until > Instant::now());
        if held {
            state.held.remove(name);
        }
        Ok(held)
    }
}
