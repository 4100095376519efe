//! GCRA in process: one timestamp per key behind a mutex. Keys whose
//! bucket is full again carry no information and are swept as the map
//! grows, so idle clients cost nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use super::{Decision, LimiterError, Quota, RateLimiter, gcra_batch};
use crate::clock::Clock;

pub struct MemoryLimiter {
    clock: Arc<dyn Clock>,
    epoch: Instant,
    state: Mutex<State>,
}

struct State {
    tats: HashMap<String, u64>,
    sweep_at: usize,
}

impl MemoryLimiter {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let epoch = clock.now();
        Self {
            clock,
            epoch,
            state: Mutex::new(State {
                tats: HashMap::new(),
                sweep_at: 1024,
            }),
        }
    }

    fn now_us(&self) -> u64 {
        // Offset by one period's worth so "now" never starts at zero.
        u64::try_from(
            self.clock
                .now()
                .saturating_duration_since(self.epoch)
                .as_micros(),
        )
        .unwrap_or(u64::MAX)
            + 1_000_000_000
    }

    /// Tracked keys (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tats
            .len()
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
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
        let now = self.now_us();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (decisions, tat) = gcra_batch(state.tats.get(key).copied(), now, quota, n);
        if decisions.first().is_some_and(|d| d.allowed) {
            state.tats.insert(key.to_owned(), tat);
        }
        if state.tats.len() >= state.sweep_at {
            state.tats.retain(|_, tat| *tat > now);
            state.sweep_at = (state.tats.len() * 2).max(1024);
        }
        Ok(decisions)
    }

    async fn reset(&self, key: &str) -> Result<(), LimiterError> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tats
            .remove(key);
        Ok(())
    }
}
