//! A circuit breaker per deployed component version.
//!
//! `Closed` counts outcomes. It trips to `Open` after `consecutive_failures`
//! failures in a row, or when at least `min_calls` calls in the last
//! `window` failed at `failure_ratio` or more. While open, calls are refused
//! without touching the guest. After `open_for`, it lets `max_probes` calls
//! through (`HalfOpen`): a success closes it and clears the counts, a
//! failure opens it again.
//!
//! A refusal is not logged on its own: an open breaker in front of a busy
//! route refuses tens of thousands of calls a second (one line each was 32
//! MB of log in 5 s). The breaker counts them instead and logs the count
//! once, with the transition that ends the state they were refused in
//! ("refused N requests while open"), or when the breaker is dropped with
//! its version still open.
//!
//! The clock is injected ([`Clock`]), so every transition is unit-tested
//! without sleeping.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Thresholds of a breaker; every field can be set per component in `pitstop.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failures in a row that open it.
    pub consecutive_failures: u32,
    /// Failure share in the window that opens it (0.0-1.0) ...
    pub failure_ratio: f64,
    /// ... once the window holds at least this many calls.
    pub min_calls: u32,
    /// How far back the ratio looks, in milliseconds.
    pub window_ms: u64,
    /// How long it stays open before probing, in milliseconds.
    pub open_ms: u64,
    /// Calls let through while half-open.
    pub max_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_calls: 20,
            window_ms: 30_000,
            open_ms: 30_000,
            max_probes: 1,
        }
    }
}

/// Where time comes from.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The state, as shown in the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A few probe calls are let through.
    HalfOpen,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        })
    }
}

/// A snapshot for the admin API and logs.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The state.
    pub state: State,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Calls in the window.
    pub window_calls: u32,
    /// Failures in the window.
    pub window_failures: u32,
    /// Times it opened.
    pub opened: u64,
}

/// Permission to make one call; report its outcome with [`Breaker::record`].
#[derive(Debug)]
#[must_use]
pub struct Permit {
    probe: bool,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// How long until it may let a probe through.
    pub retry_after: Duration,
}

/// One breaker. Cheap to share: the state sits behind a short mutex that is
/// never held across an await.
pub struct Breaker {
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    name: Arc<str>,
    inner: Mutex<Inner>,
    observer: Option<Arc<dyn Fn(State) + Send + Sync>>,
}

struct Inner {
    state: State,
    consecutive: u32,
    window: Window,
    opened_at: Option<Instant>,
    probes_out: u32,
    opened: u64,
    /// Calls refused since the last transition: logged, as one count,
    /// with the next one.
    refused: u64,
}

/// Calls and failures over the last `window_ms`, in [`BUCKETS`] slices: O(1)
/// per call and constant memory however many calls arrive. A call leaves the
/// window with its slice, so the window is exact to a tenth of its length.
struct Window {
    slice: Duration,
    /// (slice start, calls, failures), oldest first.
    buckets: VecDeque<(Instant, u32, u32)>,
    calls: u32,
    failures: u32,
}

/// Slices a window is cut into.
const BUCKETS: u32 = 10;

impl Window {
    fn new(length: Duration) -> Self {
        Window {
            slice: (length / BUCKETS).max(Duration::from_millis(1)),
            buckets: VecDeque::new(),
            calls: 0,
            failures: 0,
        }
    }

    fn expire(&mut self, now: Instant) {
        let length = self.slice * BUCKETS;
        while let Some(&(start, calls, failures)) = self.buckets.front() {
            if now.duration_since(start) < length {
                break;
            }
            self.calls -= calls;
            self.failures -= failures;
            self.buckets.pop_front();
        }
    }

    fn push(&mut self, now: Instant, success: bool) {
        self.expire(now);
        let fresh = match self.buckets.back() {
            Some(&(start, _, _)) => now.duration_since(start) >= self.slice,
            None => true,
        };
        if fresh {
            self.buckets.push_back((now, 0, 0));
        }
        let bucket = self.buckets.back_mut().expect("just ensured");
        bucket.1 += 1;
        self.calls += 1;
        if !success {
            bucket.2 += 1;
            self.failures += 1;
        }
    }

    fn clear(&mut self) {
        self.buckets.clear();
        self.calls = 0;
        self.failures = 0;
    }
}

impl Breaker {
    /// A closed breaker for `name`.
    pub fn new(name: Arc<str>, config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        Breaker {
            config,
            clock,
            name,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive: 0,
                window: Window::new(Duration::from_millis(config.window_ms)),
                opened_at: None,
                probes_out: 0,
                opened: 0,
                refused: 0,
            }),
            observer: None,
        }
    }

    /// Call `observer` with the new state at every transition (for metrics).
    pub fn on_transition(mut self, observer: Arc<dyn Fn(State) + Send + Sync>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Ask to make a call.
    pub fn try_acquire(&self) -> Result<Permit, Refused> {
        let now = self.clock.now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.state == State::Open {
            let open_until = inner.opened_at.expect("open has a start") + self.open_for();
            if now < open_until {
                inner.refused += 1;
                return Err(Refused { retry_after: open_until - now });
            }
            self.transition(&mut inner, State::HalfOpen);
        }
        if inner.state == State::HalfOpen {
            if inner.probes_out >= self.config.max_probes {
                inner.refused += 1;
                return Err(Refused { retry_after: Duration::from_secs(1) });
            }
            inner.probes_out += 1;
            return Ok(Permit { probe: true });
        }
        Ok(Permit { probe: false })
    }

    /// Report how the call went.
    pub fn record(&self, permit: Permit, success: bool) {
        let now = self.clock.now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if permit.probe {
            inner.probes_out = inner.probes_out.saturating_sub(1);
            if inner.state != State::HalfOpen {
                return;
            }
            if success {
                inner.consecutive = 0;
                inner.window.clear();
                self.transition(&mut inner, State::Closed);
            } else {
                self.open(&mut inner, now);
            }
            return;
        }
        if inner.state != State::Closed {
            // A call admitted before the breaker opened; its outcome is stale.
            return;
        }
        inner.consecutive = if success { 0 } else { inner.consecutive + 1 };
        inner.window.push(now, success);
        let (calls, failures) = (inner.window.calls, inner.window.failures);
        let ratio_trips = calls >= self.config.min_calls
            && f64::from(failures) >= self.config.failure_ratio * f64::from(calls);
        if inner.consecutive >= self.config.consecutive_failures || ratio_trips {
            self.open(&mut inner, now);
        }
    }

    /// Give back a permit whose call never reached the guest (refused for
    /// load, say): it counts neither way.
    pub fn release(&self, permit: Permit) {
        if permit.probe {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.probes_out = inner.probes_out.saturating_sub(1);
        }
    }

    /// The state and counts now.
    pub fn snapshot(&self) -> Snapshot {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.window.expire(self.clock.now());
        let state = match inner.state {
            State::Open if self.clock.now() >= inner.opened_at.expect("open") + self.open_for() => {
                State::HalfOpen
            }
            state => state,
        };
        Snapshot {
            state,
            consecutive_failures: inner.consecutive,
            window_calls: inner.window.calls,
            window_failures: inner.window.failures,
            opened: inner.opened,
        }
    }

    fn open_for(&self) -> Duration {
        Duration::from_millis(self.config.open_ms)
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        inner.opened_at = Some(now);
        inner.opened += 1;
        self.transition(inner, State::Open);
    }

    fn transition(&self, inner: &mut Inner, to: State) {
        if inner.state != to {
            let (component, from) = (&*self.name, inner.state);
            match std::mem::take(&mut inner.refused) {
                0 => tracing::warn!(component, ?from, ?to, "circuit breaker"),
                refused => tracing::warn!(
                    component,
                    ?from,
                    ?to,
                    refused,
                    "circuit breaker refused {refused} requests while {from}"
                ),
            }
            inner.state = to;
            if let Some(observer) = &self.observer {
                observer(to);
            }
        }
    }
}

impl Drop for Breaker {
    /// Refusals not logged yet (the version was replaced while its breaker
    /// was open) are logged now rather than lost.
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        if inner.refused > 0 {
            let (component, state, refused) = (&*self.name, inner.state, inner.refused);
            tracing::warn!(
                component,
                ?state,
                refused,
                "circuit breaker refused {refused} requests while {state}; its version no \
                 longer serves"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test moves by hand.
    struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn breaker(config: BreakerConfig) -> (Breaker, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock(Mutex::new(Instant::now())));
        (Breaker::new("test".into(), config, clock.clone()), clock)
    }

    fn call(breaker: &Breaker, success: bool) -> bool {
        match breaker.try_acquire() {
            Ok(permit) => {
                breaker.record(permit, success);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn consecutive_failures_open_it_and_it_refuses_until_the_timeout() {
        let (b, clock) = breaker(BreakerConfig::default());
        for _ in 0..4 {
            assert!(call(&b, false));
        }
        assert_eq!(b.snapshot().state, State::Closed);
        assert!(call(&b, false));
        assert_eq!(b.snapshot().state, State::Open);
        let refused = b.try_acquire().unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(30));
        clock.advance(Duration::from_secs(29));
        assert!(b.try_acquire().is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.snapshot().state, State::HalfOpen);
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let (b, _) = breaker(BreakerConfig::default());
        for _ in 0..10 {
            for _ in 0..4 {
                call(&b, false);
            }
            call(&b, true);
        }
        // 40 failures of 50, but never 5 in a row: the ratio rule trips instead.
        assert_eq!(b.snapshot().state, State::Open);
        let (b, _) = breaker(BreakerConfig { failure_ratio: 0.9, ..Default::default() });
        for _ in 0..10 {
            for _ in 0..4 {
                call(&b, false);
            }
            call(&b, true);
        }
        assert_eq!(b.snapshot().state, State::Closed, "80% < 90%, never 5 in a row");
    }

    #[test]
    fn the_ratio_needs_enough_calls_in_the_window() {
        let config = BreakerConfig { consecutive_failures: 100, ..Default::default() };
        let (b, clock) = breaker(config);
        for i in 0..19 {
            call(&b, i % 2 == 0);
        }
        assert_eq!(b.snapshot().state, State::Closed, "19 calls are below min_calls");
        // Old calls leave the window.
        clock.advance(Duration::from_secs(31));
        call(&b, false);
        assert_eq!(b.snapshot().window_calls, 1);
        assert_eq!(b.snapshot().state, State::Closed);
        for i in 0..19 {
            call(&b, i % 2 == 0);
        }
        assert_eq!(b.snapshot().state, State::Open, "10 of 20 failed: 50%");
    }

    #[test]
    fn half_open_lets_max_probes_through_and_closes_on_success() {
        let config = BreakerConfig { max_probes: 2, ..Default::default() };
        let (b, clock) = breaker(config);
        for _ in 0..5 {
            call(&b, false);
        }
        clock.advance(Duration::from_secs(30));
        let first = b.try_acquire().unwrap();
        let second = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "only max_probes at once");
        b.record(first, true);
        assert_eq!(b.snapshot().state, State::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 0);
        b.record(second, false);
        assert_eq!(
            b.snapshot().state,
            State::Closed,
            "a probe's late outcome is ignored once closed"
        );
    }

    #[test]
    fn a_released_permit_counts_neither_way() {
        let (b, clock) = breaker(BreakerConfig::default());
        for _ in 0..4 {
            call(&b, false);
        }
        b.release(b.try_acquire().unwrap());
        assert_eq!(b.snapshot().consecutive_failures, 4);
        call(&b, false);
        clock.advance(Duration::from_secs(30));
        b.release(b.try_acquire().unwrap());
        assert_eq!(b.snapshot().state, State::HalfOpen, "a released probe does not close it");
        assert!(b.try_acquire().is_ok(), "and its probe slot is free again");
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let (b, clock) = breaker(BreakerConfig::default());
        for _ in 0..5 {
            call(&b, false);
        }
        clock.advance(Duration::from_secs(30));
        assert!(call(&b, false));
        assert_eq!(b.snapshot().state, State::Open);
        assert_eq!(b.snapshot().opened, 2);
        assert_eq!(b.try_acquire().unwrap_err().retry_after, Duration::from_secs(30));
    }

    /// The log lines `run` writes, captured.
    fn logged(run: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber =
            tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn refusals_are_logged_once_with_their_count_at_the_next_transition() {
        let (b, clock) = breaker(BreakerConfig::default());
        let lines = logged(|| {
            for _ in 0..5 {
                call(&b, false);
            }
            for _ in 0..1000 {
                assert!(b.try_acquire().is_err());
            }
            clock.advance(Duration::from_secs(30));
            let probe = b.try_acquire().unwrap();
            for _ in 0..7 {
                assert!(b.try_acquire().is_err(), "the probe is out");
            }
            b.record(probe, true);
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains("from=Closed to=Open"), "{}", lines[0]);
        assert!(lines[1].contains("refused 1000 requests while open"), "{}", lines[1]);
        assert!(lines[1].contains("from=Open to=HalfOpen"), "{}", lines[1]);
        assert!(lines[2].contains("refused 7 requests while half-open"), "{}", lines[2]);

        // Refusals of a breaker dropped while open are logged then.
        let lines = logged(|| {
            let (b, _) = breaker(BreakerConfig::default());
            for _ in 0..5 {
                call(&b, false);
            }
            for _ in 0..3 {
                assert!(b.try_acquire().is_err());
            }
        });
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[1].contains("refused 3 requests while open; its version no longer"));
    }
}
