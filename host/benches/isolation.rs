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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use probe::{Get, Probes, concurrently, ms, probe_while};

type Http = Client<HttpConnector, Full<Bytes>>;

include!("../guest_cargo.rs");

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
    std::fs::write(&config, probe::busy_config(&build_busy(), "", "")).unwrap();
    // PITSTOP_BIN measures another build (e.g. the previous commit's) the same way.
    let binary = std::env::var_os("PITSTOP_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pitstop")), PathBuf::from);
    println!("binary: {}", binary.display());
    let mut child = Command::new(&binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let base = lines.next().unwrap().unwrap().replace("pitstop listening on ", "");
    // The log goes on on stdout: keep draining it so the server never blocks.
    std::thread::spawn(move || lines.for_each(drop));
    let gateway = Gateway { http: Client::builder(TokioExecutor::new()).build_http(), base };
    let user = create_user(&gateway, &data.path().join("data")).await;
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
    let _ = child.kill();
    let _ = child.wait();
}

/// `tests/components` built for release (the `busy.wasm` the tests use).
fn build_busy() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let target = root.join("target").join("wasm-components");
    let status = guest_cargo()
        .args(["build", "--release", "--target", "wasm32-wasip2", "-p", "busy", "--manifest-path"])
        .arg(root.join("tests/components/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("running cargo for tests/components");
    assert!(status.success(), "building tests/components/busy failed");
    target.join("wasm32-wasip2/release/busy.wasm")
}

async fn create_user(gateway: &Gateway, data_dir: &Path) -> String {
    let minted = Command::new(env!("CARGO_BIN_EXE_pitstop"))
        .args(["token", "--sub", "bench", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_string();
    let body = r#"{"name":"Bench","email":"bench@example.com"}"#;
    let request = http::Request::post(format!("{}/users", gateway.base))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = gateway.http.request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    json["id"].as_str().unwrap().to_string()
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
