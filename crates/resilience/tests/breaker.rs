//! The circuit breaker with a clock moved by hand.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use resilience::breaker::{BreakerConfig, CircuitBreaker, State};
use resilience::clock::ManualClock;

fn breaker() -> (Arc<ManualClock>, CircuitBreaker) {
    let clock = Arc::new(ManualClock::default());
    let config = BreakerConfig {
        window: Duration::from_secs(10),
        buckets: 10,
        min_calls: 10,
        failure_rate: 0.5,
        slow_call: Duration::from_millis(500),
        open_for: Duration::from_secs(5),
        probes: 2,
    };
    (
        clock.clone(),
        CircuitBreaker::new("test-upstream", config, clock),
    )
}

fn call(breaker: &CircuitBreaker, ok: bool) {
    let permit = breaker.try_acquire().expect("admitted");
    breaker.record(permit, ok);
}

#[test]
fn opens_once_the_window_has_enough_calls_and_failures() {
    let (_clock, breaker) = breaker();
    // Nine failures: below min_calls, still closed.
    for _ in 0..9 {
        call(&breaker, false);
    }
    assert_eq!(breaker.state(), State::Closed);
    call(&breaker, false);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn a_healthy_failure_rate_keeps_it_closed() {
    let (_clock, breaker) = breaker();
    for i in 0..100 {
        call(&breaker, i % 3 != 0); // a third fail
    }
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn old_failures_slide_out_of_the_window() {
    let (clock, breaker) = breaker();
    for _ in 0..9 {
        call(&breaker, false);
    }
    clock.advance(Duration::from_secs(11));
    call(&breaker, false);
    assert_eq!(
        breaker.state(),
        State::Closed,
        "the nine earlier failures expired"
    );
}

#[test]
fn slow_successes_count_as_failures() {
    let (clock, breaker) = breaker();
    for _ in 0..10 {
        let permit = breaker.try_acquire().unwrap();
        clock.advance(Duration::from_millis(600));
        breaker.record(permit, true);
    }
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn open_rejects_at_once_then_half_opens_closes_after_probes() {
    let (clock, breaker) = breaker();
    for _ in 0..10 {
        call(&breaker, false);
    }
    let rejected = breaker.try_acquire().unwrap_err();
    assert_eq!(rejected.retry_after, Duration::from_secs(5));
    clock.advance(Duration::from_secs(3));
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(2)
    );

    clock.advance(Duration::from_secs(2));
    assert_eq!(breaker.state(), State::HalfOpen);
    let first = breaker.try_acquire().unwrap();
    let second = breaker.try_acquire().unwrap();
    assert!(breaker.try_acquire().is_err(), "only two probes at a time");
    breaker.record(first, true);
    assert_eq!(breaker.state(), State::HalfOpen);
    breaker.record(second, true);
    assert_eq!(breaker.state(), State::Closed);
    call(&breaker, true);
}

#[test]
fn a_failed_probe_reopens_for_another_full_period() {
    let (clock, breaker) = breaker();
    for _ in 0..10 {
        call(&breaker, false);
    }
    clock.advance(Duration::from_secs(5));
    let probe = breaker.try_acquire().unwrap();
    breaker.record(probe, false);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(5)
    );
}

#[test]
fn outcomes_of_calls_admitted_before_a_transition_are_ignored() {
    let (clock, breaker) = breaker();
    let straggler = breaker.try_acquire().unwrap();
    for _ in 0..10 {
        call(&breaker, false);
    }
    clock.advance(Duration::from_secs(5));
    assert_eq!(breaker.state(), State::HalfOpen);
    // A call from the closed period finishing now must not count as a probe.
    breaker.record(straggler, true);
    assert_eq!(breaker.state(), State::HalfOpen);
    let a = breaker.try_acquire().unwrap();
    let b = breaker.try_acquire().unwrap();
    breaker.record(a, true);
    breaker.record(b, true);
    assert_eq!(breaker.state(), State::Closed);
}
