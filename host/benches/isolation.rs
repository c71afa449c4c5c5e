//! Isolation figures, measured against the real `pitstop` binary: how fast
//! the gateway (`GET /health`, answered by the gateway itself) and another
//! component (`GET /users/{id}`, the user service) answer while the `busy`
//! test component (`tests/components/busy`) is
//!
//! 1. idle;
//! 2. flooded with 200 concurrent `GET /busy/burn/1000` (1 s of CPU each,
//!    far more than two cores have before the 5 s deadline);
//! 3. running two guests in infinite loops until their deadline.
//!
//! Each path is probed sequentially every 20 ms while the load runs (the
//! same probes as the `load` integration tests, `tests/load/probe.rs`);
//! p50 and p99 side by side, with how the load itself was answered.
//!
//! Run: `cargo bench -p pitstop-host --bench isolation` (`PITSTOP_BIN=PATH`
//! to measure another build of `pitstop` the same way). Figures, not
//! assertions. The clients run on the same machine as the host and compete
//! with it for CPU, as the flood does.

// Shared with the load tests, which use all of it.
#[allow(dead_code)]
#[path = "../../tests/load/probe.rs"]
mod probe;
mod support;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use probe::{Get, Probes, concurrently, ms, probe_while};
use support::{Http, Pitstop, build_test_component, create_user, mint_token};

/// The gateway, over one keep-alive client.
struct Gateway {
    http: Http,
    base: String,
}

impl Get for Gateway {
    async fn status_of(&self, path: &str) -> u16 {
        let request = http::Request::get(format!("{}{path}", self.base))
            .body(Full::new(Bytes::new()))
            .unwrap();
        // A host that stalls (an older build) must not hang the bench:
        // a request unanswered after a minute counts as status 0.
        let Ok(response) =
            tokio::time::timeout(Duration::from_secs(60), self.http.request(request)).await
        else {
            return 0;
        };
        let response = response.expect("the gateway answers");
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        status
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let data = tempfile::TempDir::new().unwrap();
    let config = data.path().join("pitstop.toml");
    let busy = build_test_component("busy");
    std::fs::write(&config, probe::busy_config(&busy, "", "")).unwrap();
    // PITSTOP_BIN measures another build (e.g. the previous commit's) the same way.
    let binary = std::env::var_os("PITSTOP_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pitstop")), PathBuf::from);
    println!("binary: {}", binary.display());
    let data_dir = data.path().join("data");
    let server = Pitstop::start(&binary, &data_dir, &["--config".as_ref(), config.as_os_str()]);
    let gateway = Gateway {
        http: Client::builder(TokioExecutor::new()).build_http(),
        base: server.base.clone(),
    };
    let user = create_user(&gateway.http, &gateway.base, &mint_token(&data_dir)).await;
    let users = format!("/users/{user}");
    let paths = ["/health", users.as_str()];
    assert_eq!(gateway.status_of("/busy/ok").await, 200, "busy is deployed");

    let (_, idle) = probe_while(&gateway, &paths, tokio::time::sleep(Duration::from_secs(4))).await;
    let (flood, flooded) =
        probe_while(&gateway, &paths, concurrently(200, || gateway.status_of("/busy/burn/1000")))
            .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (loops, looping) =
        probe_while(&gateway, &paths, concurrently(2, || gateway.status_of("/busy/loop"))).await;

    println!("GET latency while the busy component is loaded (sequential probes every 20 ms):");
    println!(
        "  {:<28} {:>21}  {:>21}  the load's answers",
        "load", "/health p50 / p99", "/users/{id} p50 / p99"
    );
    row("idle", &idle, "-");
    row("200 x burn/1000 (flood)", &flooded, &tally(&flood));
    row("2 x loop", &looping, &tally(&loops));
}

fn row(label: &str, probes: &[Probes], load: &str) {
    let cell =
        |p: &Probes| format!("{:7.2} / {:7.2} ms", ms(p.percentile(50.0)), ms(p.percentile(99.0)));
    let count: usize = probes.iter().map(|p| p.latencies.len()).sum();
    let failed: usize = probes.iter().map(|p| p.failed.len()).sum();
    println!(
        "  {label:<28} {:>21}  {:>21}  {load} ({count} probes, {failed} not 200)",
        cell(&probes[0]),
        cell(&probes[1])
    );
}

/// How many of `answers` have each status, and the slowest answer.
fn tally(answers: &[(u16, Duration)]) -> String {
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for (status, _) in answers {
        *counts.entry(*status).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap_or_default();
    format!("{}, slowest {:.2} s", counts.join(", "), slowest.as_secs_f64())
}
