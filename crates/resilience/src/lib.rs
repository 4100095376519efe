//! Resilience primitives, each small, pure where it can be, and tested
//! with a controllable clock; the gateway composes them at its edge.
//!
//! - [`clock`]: the time source, real or manual;
//! - [`breaker`]: a circuit breaker over a sliding window of outcomes;
//! - [`rate_limit`]: GCRA rate limiting, in process or in Redis.

pub mod breaker;
pub mod clock;
pub mod rate_limit;
