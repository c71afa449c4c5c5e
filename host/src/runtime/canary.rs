//! Canary versions: a second version of a component that takes a share of
//! its requests while the active one takes the rest, and what each
//! version's requests did, to compare the two.
//!
//! The split is per request: a request carrying a stable identity (the
//! verified subject, `pitstop-subject`, or else a client's `x-client-id`)
//! always lands on the same side for one canary, so a user does not see
//! versions flicker; one without lands at random. `services` calls split
//! the same way (they carry the subject of the client served). Event
//! deliveries always go to the active version: both versions share the
//! keyspace and the event queue.
//!
//! What counts as a version's failed request, for the judge: a trap, a
//! missed deadline (unless the client's upload, or the wait before the run,
//! left the version less than half of it), a 5xx answer but 507. Not: a 4xx
//! (the client's), a 507 (a full keyspace), the platform's store being
//! unreachable, nor a request its open circuit breaker refused without
//! running it. A refusal is counted apart ([`Traffic::refused`]): a client
//! that makes a version fail a few times in a row opens its breaker, and
//! were each refusal its failure, that client could make either version's
//! error rate whatever it liked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::VersionMetrics;

/// The header a client without a verified subject may send to stay on one
/// side of a split.
pub const CLIENT_KEY_HEADER: &str = "x-client-id";

/// Whether a request with stable identity `key` (if any) goes to canary
/// `version` taking `percent` of the requests. Salted with the version, so
/// each canary splits users afresh.
pub fn takes(version: u64, percent: u8, key: Option<&str>) -> bool {
    let bucket = match key {
        Some(key) => fnv1a(version, key.as_bytes()) % 100,
        None => random_u64() % 100,
    };
    bucket < u64::from(percent)
}

fn fnv1a(salt: u64, bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // No entropy is no reason to fail a request: fall back to the clock.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        return u64::from(nanos);
    }
    u64::from_le_bytes(bytes)
}

/// When an auto-rollback canary is dropped or promoted: `[canary]` in the
/// config.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryPolicy {
    /// Failed requests per request above which (and above the active
    /// version's) the canary is rolled back.
    pub max_error_rate: f64,
    /// p99 latency in ms above which (and above the active version's) the
    /// canary is rolled back.
    pub max_p99_ms: f64,
    /// Requests the canary must have served before it is judged.
    pub min_requests: u64,
    /// Promote it after this many of its requests went well.
    pub promote_after_requests: Option<u64>,
    /// Promote it once this long has passed without a rollback.
    pub promote_after_ms: Option<u64>,
}

impl CanaryPolicy {
    /// Whether the thresholds make sense; why not otherwise.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return Err(format!(
                "max_error_rate must be within 0 and 1, not {}",
                self.max_error_rate
            ));
        }
        if self.max_p99_ms.is_nan() || self.max_p99_ms <= 0.0 {
            return Err(format!("max_p99_ms must be above 0, not {}", self.max_p99_ms));
        }
        Ok(())
    }
}

impl Default for CanaryPolicy {
    fn default() -> Self {
        CanaryPolicy {
            max_error_rate: 0.05,
            max_p99_ms: 1_000.0,
            min_requests: 20,
            promote_after_requests: None,
            promote_after_ms: None,
        }
    }
}

/// Upper bounds of the latency buckets, in milliseconds; the last is open.
const BUCKETS_MS: [f64; 16] = [
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
    200.0,
    500.0,
    1_000.0,
    2_000.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    f64::INFINITY,
];

/// What one version's requests did: counts and a latency histogram, kept
/// in the deployment (lock-free) and exported as metrics with a `version`
/// label.
pub struct Traffic {
    requests: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
    buckets: [AtomicU64; BUCKETS_MS.len()],
    metrics: VersionMetrics,
}

impl Traffic {
    /// Counting into `metrics` as well.
    pub fn new(metrics: VersionMetrics) -> Self {
        Traffic {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            buckets: Default::default(),
            metrics,
        }
    }

    /// One request: whether it went well, and how long it took.
    pub fn record(&self, ok: bool, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.metrics.ok.inc();
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.metrics.error.inc();
        }
        self.metrics.seconds.observe(elapsed.as_secs_f64());
        let ms = elapsed.as_secs_f64() * 1e3;
        let bucket = BUCKETS_MS.iter().position(|bound| ms <= *bound).unwrap_or(0);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// One request its open circuit breaker refused without running it:
    /// neither a request nor a failure of this version (see the module's
    /// docs), counted apart.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.metrics.refused.inc();
    }

    /// The counts now.
    pub fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

/// [`Traffic`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficSnapshot {
    /// Requests answered.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Requests its open circuit breaker refused (not in `requests`).
    pub refused: u64,
    buckets: [u64; BUCKETS_MS.len()],
}

impl TrafficSnapshot {
    /// What happened between `earlier` and this.
    pub fn since(&self, earlier: &TrafficSnapshot) -> TrafficSnapshot {
        TrafficSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            refused: self.refused.saturating_sub(earlier.refused),
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
        }
    }

    /// Failed requests per request; 0 without requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }

    /// The upper bound of the bucket holding the 99th percentile, in
    /// milliseconds (`None` without requests; infinite past 60 s).
    pub fn p99_ms(&self) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // The smallest bucket bound with at least 99% of requests at or below it.
        let needed = (total * 99).div_ceil(100);
        let mut seen = 0;
        for (count, bound) in self.buckets.iter().zip(BUCKETS_MS) {
            seen += count;
            if seen >= needed {
                return Some(bound);
            }
        }
        Some(f64::INFINITY)
    }

    /// For the admin listing.
    pub fn summary(&self) -> TrafficSummary {
        TrafficSummary {
            requests: self.requests,
            errors: self.errors,
            refused: self.refused,
            p99_ms: self.p99_ms().filter(|ms| ms.is_finite()),
        }
    }
}

/// A version's traffic as the admin API shows it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TrafficSummary {
    /// Requests answered.
    pub requests: u64,
    /// Of which failed (a trap, a missed deadline, a 5xx but 507).
    pub errors: u64,
    /// Requests its open circuit breaker refused without running them;
    /// not in `requests`, and never a failure for the judge.
    pub refused: u64,
    /// The 99th percentile's latency bucket, in ms (1, 2, 5, 10, 20, 50,
    /// ... 60000); absent without requests or past a minute.
    pub p99_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_sticky_per_key_and_near_the_share() {
        let split = |percent: u8, key: &str| fnv1a(7, key.as_bytes()) % 100 < u64::from(percent);
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        // Within three standard deviations of the share, as a uniform hash
        // would be (10%: 1000 +- 90; 30%: 3000 +- 137).
        let taken = keys.iter().filter(|k| split(10, k)).count();
        assert!((910..=1090).contains(&taken), "{taken} of 10000 at 10%");
        let taken = keys.iter().filter(|k| split(30, k)).count();
        assert!((2863..=3137).contains(&taken), "{taken} of 10000 at 30%");
        assert!(keys.iter().all(|k| split(10, k) == split(10, k)));
    }

    #[test]
    fn p99_and_error_rate() {
        let mut snapshot = TrafficSnapshot { requests: 100, errors: 30, ..Default::default() };
        snapshot.buckets[0] = 98; // <= 1 ms
        snapshot.buckets[9] = 2; // <= 1 s
        assert_eq!(snapshot.p99_ms(), Some(1_000.0));
        assert!((snapshot.error_rate() - 0.3).abs() < 1e-9);
        let later = TrafficSnapshot { requests: 150, errors: 30, ..snapshot };
        assert_eq!(later.since(&snapshot).requests, 50);
        assert_eq!(TrafficSnapshot::default().p99_ms(), None);
    }
}
