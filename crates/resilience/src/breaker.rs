//! A circuit breaker per upstream: closed, open and half-open.
//!
//! - **Closed**: calls pass; outcomes go into a sliding window of
//!   `buckets` time slices covering `window`. Once the window holds at
//!   least `min_calls` outcomes and the failure rate reaches
//!   `failure_rate`, the breaker opens. A call slower than `slow_call`
//!   counts as a failure even if it succeeded.
//! - **Open**: calls are rejected at once with the time left
//!   (`Retry-After`), without touching the upstream, for `open_for`.
//! - **Half-open**: up to `probes` calls are let through; if all succeed the
//!   breaker closes with a fresh window, the first failure re-opens it.
//!
//! Every call takes a [`Permit`] and reports its outcome with it. Outcomes
//! of calls admitted under an earlier state are ignored, so a slow call
//! from before an opening cannot close (or re-open) the breaker later.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;

#[derive(Clone, Debug)]
pub struct BreakerConfig {
    pub window: Duration,
    pub buckets: u32,
    pub min_calls: u32,
    /// Failures / calls at which the breaker opens, in `0.0..=1.0`.
    pub failure_rate: f64,
    pub slow_call: Duration,
    pub open_for: Duration,
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            buckets: 10,
            min_calls: 20,
            failure_rate: 0.5,
            slow_call: Duration::from_secs(2),
            open_for: Duration::from_secs(5),
            probes: 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// Gauge value: 0 closed, 1 open, 2 half-open.
    fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

/// The breaker refused the call; retry after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry in {retry_after:?}")]
pub struct Rejected {
    pub retry_after: Duration,
}

/// Admission of one call; give it back with [`CircuitBreaker::record`].
#[derive(Debug)]
#[must_use = "report the call's outcome with CircuitBreaker::record"]
pub struct Permit {
    generation: u64,
    started: Instant,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    start_slot: u64,
    calls: u32,
    failures: u32,
}

struct Inner {
    state: State,
    generation: u64,
    opened_until: Instant,
    probes_in_flight: u32,
    probe_successes: u32,
    buckets: Vec<Bucket>,
}

pub struct CircuitBreaker {
    name: String,
    /// Which calls to `name` this breaker guards (`class` label): one
    /// upstream may have a breaker per route class, so that a flood of
    /// slow sign-ins does not shut off reads.
    class: &'static str,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    epoch: Instant,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// `name` labels the breaker's metrics (`upstream`, with `class="all"`).
    pub fn new(name: impl Into<String>, config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        Self::for_class(name, "all", config, clock)
    }

    /// One of several breakers in front of `name`, for the calls of `class`.
    pub fn for_class(
        name: impl Into<String>,
        class: &'static str,
        config: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let now = clock.now();
        let buckets = vec![Bucket::default(); config.buckets.max(1) as usize];
        let breaker = Self {
            name: name.into(),
            class,
            config,
            epoch: now,
            clock,
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                opened_until: now,
                probes_in_flight: 0,
                probe_successes: 0,
                buckets,
            }),
        };
        metrics::gauge!("circuit_breaker_state", "upstream" => breaker.name.clone(), "class" => class)
            .set(State::Closed.gauge());
        breaker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> State {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        inner.state
    }

    /// Asks to make a call.
    pub fn try_acquire(&self) -> Result<Permit, Rejected> {
        let now = self.clock.now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        match inner.state {
            State::Closed => {}
            State::Open => {
                return Err(Rejected {
                    retry_after: inner.opened_until.saturating_duration_since(now),
                });
            }
            State::HalfOpen => {
                if inner.probes_in_flight + inner.probe_successes >= self.config.probes {
                    // Probes are out; the rest wait for their verdict.
                    return Err(Rejected {
                        retry_after: Duration::from_secs(1),
                    });
                }
                inner.probes_in_flight += 1;
            }
        }
        Ok(Permit {
            generation: inner.generation,
            started: now,
        })
    }

    /// Reports how the call went.
    pub fn record(&self, permit: Permit, succeeded: bool) {
        let now = self.clock.now();
        let failed =
            !succeeded || now.saturating_duration_since(permit.started) > self.config.slow_call;
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        if permit.generation != inner.generation {
            return;
        }
        match inner.state {
            State::Closed => {
                let slot = self.slot(now);
                let index = (slot % inner.buckets.len() as u64) as usize;
                let bucket = &mut inner.buckets[index];
                if bucket.start_slot != slot {
                    *bucket = Bucket {
                        start_slot: slot,
                        ..Bucket::default()
                    };
                }
                bucket.calls += 1;
                bucket.failures += u32::from(failed);
                let (calls, failures) = self.window_totals(&inner, slot);
                if calls >= self.config.min_calls
                    && f64::from(failures) >= self.config.failure_rate * f64::from(calls)
                {
                    self.transition(&mut inner, State::Open, now);
                }
            }
            State::HalfOpen => {
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
                if failed {
                    self.transition(&mut inner, State::Open, now);
                } else {
                    inner.probe_successes += 1;
                    if inner.probe_successes >= self.config.probes {
                        self.transition(&mut inner, State::Closed, now);
                    }
                }
            }
            State::Open => {}
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        let width = self.config.window / self.config.buckets.max(1);
        let since = now.saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos() / width.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    fn window_totals(&self, inner: &Inner, slot: u64) -> (u32, u32) {
        let span = inner.buckets.len() as u64;
        inner
            .buckets
            .iter()
            .filter(|b| b.calls > 0 && slot.saturating_sub(b.start_slot) < span)
            .fold((0, 0), |(c, f), b| (c + b.calls, f + b.failures))
    }

    /// Open becomes half-open once its time is up.
    fn refresh(&self, inner: &mut Inner, now: Instant) {
        if inner.state == State::Open && now >= inner.opened_until {
            self.transition(inner, State::HalfOpen, now);
        }
    }

    fn transition(&self, inner: &mut Inner, to: State, now: Instant) {
        let from = inner.state;
        inner.state = to;
        inner.generation += 1;
        inner.probes_in_flight = 0;
        inner.probe_successes = 0;
        match to {
            State::Open => inner.opened_until = now + self.config.open_for,
            State::Closed => inner
                .buckets
                .iter_mut()
                .for_each(|b| *b = Bucket::default()),
            State::HalfOpen => {}
        }
        metrics::counter!(
            "circuit_breaker_transitions_total",
            "upstream" => self.name.clone(),
            "class" => self.class,
            "from" => from.as_str(),
            "to" => to.as_str()
        )
        .increment(1);
        metrics::gauge!("circuit_breaker_state", "upstream" => self.name.clone(), "class" => self.class)
            .set(to.gauge());
        tracing::info!(upstream = %self.name, class = self.class, from = from.as_str(), to = to.as_str(), "circuit breaker changed state");
    }
}
