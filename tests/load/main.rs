//! Isolation under load, against the real `pitstop` binary: while the
//! `busy` test component (`tests/components/busy`) burns CPU, loops, fills
//! its bulkhead or floods its output, the gateway and the other components
//! keep answering fast, every request is answered within its deadline plus
//! a second, and the limits act.
//!
//! A test binary of its own, apart from `all`: cargo runs test binaries one
//! after another, so these timing-sensitive tests never share the CPU with
//! the other integration tests. Within the binary every test first takes
//! [`alone`], so they run one at a time even with cargo's test threads.

#[allow(dead_code)]
#[path = "../all/support.rs"]
mod support;

mod limits;
mod memory;
mod output;
mod probe;
mod responsive;
mod sockets;

use std::future::Future;
use std::time::Duration;

use support::{Server, fresh_dir, test_components};

/// The bar for `GET /health` (answered by the gateway itself) under load.
const HEALTH_P99: Duration = Duration::from_millis(50);
/// The bar for another component's `GET /users/{id}` under load.
const USERS_P99: Duration = Duration::from_millis(100);
/// Fewer probes than this say little about a p99.
const MIN_PROBES: usize = 50;
/// How long past its deadline a request may take to be answered.
const GRACE: Duration = Duration::from_secs(1);

/// This test's turn: held until the test ends, so no two tests of this
/// binary measure at the same time.
async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// [`probe::busy_config`] with the `busy.wasm` these tests built.
fn config(settings: &str, more: &str) -> String {
    probe::busy_config(&busy_wasm(), settings, more)
}

fn busy_wasm() -> std::path::PathBuf {
    test_components().join("busy.wasm")
}

/// Start pitstop with `config` (extra `args` to `pitstop serve`), check
/// `busy` answers, and register a user to probe; the server and the user's id.
async fn start(config: &str, args: &[&str]) -> (Server, String) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let server = Server::start_with_args(Some(config), fresh_dir(), &args).await;
    let ok = server.get("/busy/ok").await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let user = server.create_user("Probe", "probe@example.com").await;
    (server, user)
}

impl probe::Get for Server {
    async fn status_of(&self, path: &str) -> u16 {
        self.get(path).await.status
    }
}

/// Run `load` while probing `GET /health` and `GET /users/{user}`; print
/// the figures, then assert every probe answered 200, at least
/// [`MIN_PROBES`] each, and the p99 bars. What `load` returned.
async fn probing<T>(server: &Server, user: &str, load: impl Future<Output = T>) -> T {
    let users = format!("/users/{user}");
    let (output, probes) = probe::probe_while(server, &["/health", &users], load).await;
    for probes in &probes {
        println!("{}", probes.summary());
    }
    for (probes, bar) in probes.iter().zip([HEALTH_P99, USERS_P99]) {
        assert!(probes.failed.is_empty(), "GET {} answered {:?}", probes.path, probes.failed);
        assert!(
            probes.latencies.len() >= MIN_PROBES,
            "only {} probes of {} while the load ran",
            probes.latencies.len(),
            probes.path
        );
        let p99 = probes.percentile(99.0);
        assert!(p99 <= bar, "GET {}: p99 {p99:?}, over the bar of {bar:?}", probes.path);
    }
    output
}

/// How many of `answers` have each status, e.g. `200: 10, 504: 190`.
fn tally(answers: &[(support::Answer, Duration)]) -> String {
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for (answer, _) in answers {
        *counts.entry(answer.status).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap_or_default();
    format!("{}; slowest answer after {:.2} s", counts.join(", "), slowest.as_secs_f64())
}
