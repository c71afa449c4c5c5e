//! Per-route, per-client rate limits: a token bucket (GCRA, from `governor`)
//! for each client identity on each limited route.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Deserialize;

/// A token bucket: `per_second` tokens refill each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second per client.
    pub per_second: u32,
    /// Requests a client may make at once after being idle (default: `per_second`).
    pub burst: Option<u32>,
}

impl RateLimit {
    /// Check the numbers make a bucket.
    pub fn validate(&self) -> Result<(), String> {
        if self.per_second == 0 || self.burst == Some(0) {
            return Err("rate_limit needs per_second and burst of at least 1".into());
        }
        Ok(())
    }
}

/// The buckets of one route, one per client identity.
pub struct Limiter {
    buckets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    checks: AtomicU32,
}

/// How often idle buckets are dropped, in checks: a client that stopped
/// calling must not hold memory for ever.
const SWEEP_EVERY: u32 = 4096;

impl Limiter {
    /// Buckets for `limit` (validated).
    pub fn new(limit: RateLimit) -> Result<Self, String> {
        limit.validate()?;
        let per_second = NonZeroU32::new(limit.per_second).expect("validated");
        let burst = NonZeroU32::new(limit.burst.unwrap_or(limit.per_second)).expect("validated");
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Ok(Limiter {
            buckets: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            checks: AtomicU32::new(0),
        })
    }

    /// Take a token for `client`, or say how long until one is there.
    pub fn check(&self, client: &str) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain_recent();
        }
        // Allocates only for the map lookup key; cheap next to an invocation.
        self.buckets
            .check_key(&client.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_client_separately() {
        let limiter = Limiter::new(RateLimit { per_second: 1, burst: Some(2) }).unwrap();
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check("b").is_ok());
    }

    #[test]
    fn refuses_empty_buckets() {
        assert!(Limiter::new(RateLimit { per_second: 0, burst: None }).is_err());
        assert!(Limiter::new(RateLimit { per_second: 1, burst: Some(0) }).is_err());
    }
}
