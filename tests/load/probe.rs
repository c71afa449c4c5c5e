//! Load and probes, shared by the load tests and the isolation benchmark
//! (`host/benches/isolation.rs`): many requests sent at once, and
//! sequential GETs of other paths timed while they run.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The pause between two probes of one path: often enough for 200 probes
/// in 5 s (so a p99 is not simply the slowest probe), rarely enough that the
/// probes are not themselves a load (100 requests a second in all).
pub const INTERVAL: Duration = Duration::from_millis(20);

/// Whatever answers the probes' GETs: the tests' server, the bench's client.
pub trait Get {
    /// `GET path` on the gateway; the answer's status.
    fn status_of(&self, path: &str) -> impl Future<Output = u16>;
}

/// `n` requests made by `request`, all sent at once; each answer with the
/// time from its sending to its answer, in the order sent.
pub async fn concurrently<T, F, Fut>(n: usize, mut request: F) -> Vec<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let requests = (0..n).map(|_| {
        let answer = request();
        async move {
            let sent = Instant::now();
            let answer = answer.await;
            (answer, sent.elapsed())
        }
    });
    futures::future::join_all(requests).await
}

/// The sequential probes of one path.
pub struct Probes {
    /// The path probed.
    pub path: String,
    /// Time to the answer of every probe, in the order made.
    pub latencies: Vec<Duration>,
    /// When each probe was sent, from the start of the load.
    pub sent_at: Vec<Duration>,
    /// The statuses of the probes that did not answer 200.
    pub failed: Vec<u16>,
}

impl Probes {
    /// The `percent` percentile of the latencies.
    pub fn percentile(&self, percent: f64) -> Duration {
        percentile(&self.latencies, percent)
    }

    /// One line: how many probes, p50, p99, the slowest (and when they
    /// were sent, to tell a burst from a steady cost).
    pub fn summary(&self) -> String {
        let mut slowest: Vec<(Duration, Duration)> =
            self.latencies.iter().copied().zip(self.sent_at.iter().copied()).collect();
        slowest.sort_by_key(|(took, _)| std::cmp::Reverse(*took));
        let slowest: Vec<String> = slowest
            .iter()
            .take(3)
            .map(|(took, at)| format!("{:.1} ms at {:.2} s", ms(*took), at.as_secs_f64()))
            .collect();
        format!(
            "GET {}: {} probes, p50 {:.2} ms, p99 {:.2} ms, {} not 200; slowest: {}",
            self.path,
            self.latencies.len(),
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            self.failed.len(),
            slowest.join(", ")
        )
    }
}

/// The nearest-rank `percent` percentile of `samples` (zero when empty):
/// the smallest sample at least `percent` % of all are not above. Over
/// fewer than 100 samples p99 is therefore the slowest.
pub fn percentile(samples: &[Duration], percent: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied().unwrap_or_default()
}

/// A `pitstop.toml` deploying the `busy` test component at `busy` (path of
/// its `.wasm`) as `busy` at `/busy` with the `settings` lines, the user
/// service at `/users` (a built-in route anyway; named for the reader), and
/// `more` (other components and their routes). Breakers are lenient: this
/// is about scheduling, and a breaker opened by the 504s a flood provokes
/// would answer for the guest.
pub fn busy_config(busy: &std::path::Path, settings: &str, more: &str) -> String {
    format!(
        r#"
        [components.busy]
        path = "{busy}"
        breaker = {{ consecutive_failures = 100000, min_calls = 100000 }}
        {settings}

        {more}

        [[routes]]
        prefix = "/busy"
        component = "busy"
        [[routes]]
        prefix = "/users"
        component = "user"
        "#,
        busy = busy.display(),
    )
}

/// Milliseconds, for printing.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Probe each of `paths` (one sequential loop per path, a GET every
/// [`INTERVAL`]) for as long as `load` runs; what `load` returned, and the
/// probes in the order of `paths`.
pub async fn probe_while<T>(
    target: &impl Get,
    paths: &[&str],
    load: impl Future<Output = T>,
) -> (T, Vec<Probes>) {
    let done = AtomicBool::new(false);
    let load = async {
        let output = load.await;
        done.store(true, Ordering::Relaxed);
        output
    };
    let probes = futures::future::join_all(paths.iter().map(|path| probe(target, path, &done)));
    tokio::join!(load, probes)
}

async fn probe(target: &impl Get, path: &str, done: &AtomicBool) -> Probes {
    let mut probes = Probes {
        path: path.to_string(),
        latencies: Vec::new(),
        sent_at: Vec::new(),
        failed: Vec::new(),
    };
    let start = Instant::now();
    while !done.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let status = target.status_of(path).await;
        probes.latencies.push(sent.elapsed());
        probes.sent_at.push(sent - start);
        if status != 200 {
            probes.failed.push(status);
        }
        tokio::time::sleep(INTERVAL).await;
    }
    probes
}
