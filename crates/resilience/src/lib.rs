//! Resilience primitives, each small, pure where it can be, and tested
//! with a controllable clock; the gateway composes them at its edge.
//!
//! - [`clock`]: the time source, real or manual;
//! - [`breaker`]: a circuit breaker over a sliding window of outcomes;
//! - [`fail_fast`]: a breaker in front of a backend with a local fallback;
//! - [`rate_limit`]: GCRA rate limiting, in process or in Redis.

pub mod breaker;
pub mod clock;
pub mod fail_fast;
pub mod rate_limit;
