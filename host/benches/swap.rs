//! Hot-swap figures, measured against the real `pitstop` binary:
//!
//! 1. swap latency, from the admin `PUT` being sent to the first gateway
//!    response served by the new version, for a component whose compiled
//!    artifact is cached (same bytes) and one that must be compiled (new
//!    bytes: the same component with a unique custom section appended);
//! 2. gateway throughput and latency with 8 keep-alive clients, without swaps
//!    and while the component is swapped every 250 ms.
//!
//! Run: `cargo bench -p pitstop-host --bench swap`. Figures, not assertions.
//! The clients run on the same machine as the host; on 2 cores they compete
//! for CPU, so absolute req/s are a floor, the ratio is what matters.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use support::{Http, Pitstop, create_user, mint_token};

const SWAPS: usize = 20;
const CLIENTS: usize = 8;
const WINDOW: Duration = Duration::from_secs(4);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let data = tempfile::TempDir::new().unwrap();
    let server = Pitstop::start(Path::new(env!("CARGO_BIN_EXE_pitstop")), data.path(), &[]);
    let (base, admin) = (server.base.clone(), server.admin.clone());
    let token = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let user_token = mint_token(data.path());
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let user_wasm = std::fs::read(concat!(env!("PITSTOP_BUILTIN_DIR"), "/user.wasm"))
        .expect("built by host/build.rs");

    let id = create_user(&http, &base, &user_token).await;
    let probe = format!("{base}/users/{id}");

    // Deploying the active version's bytes again deploys nothing, so a
    // cached swap alternates between two builds compiled once each.
    let twins = [user_wasm.clone(), with_custom_section(&user_wasm, usize::MAX)];
    swap(&http, &admin, &token, &probe, twins[1].clone()).await;
    let mut cached = Vec::new();
    let mut compiled = Vec::new();
    for i in 0..SWAPS {
        cached.push(swap(&http, &admin, &token, &probe, twins[i % 2].clone()).await);
        if i < SWAPS / 2 {
            compiled.push(
                swap(&http, &admin, &token, &probe, with_custom_section(&user_wasm, i)).await,
            );
        }
    }
    println!("swap latency: admin PUT sent -> first response from the new version");
    report("  cached artifact  ", &mut cached);
    report("  compiled on swap ", &mut compiled);

    let steady = load(&http, &probe, None).await;
    let swapping = load(&http, &probe, Some((&admin, &token, &twins))).await;
    println!(
        "gateway GET /users/{{id}} (keyvalue read), {CLIENTS} keep-alive clients, {} s each:",
        WINDOW.as_secs()
    );
    steady.print("  no swaps          ");
    swapping.print("  swap every 250 ms ");
    println!(
        "  throughput during swaps: {:.1}% of steady; p99 change: {:+.2} ms",
        100.0 * swapping.rate() / steady.rate(),
        swapping.p99_ms() - steady.p99_ms()
    );
}

/// Deploy `bytes`; the time until a gateway response carries the new version.
async fn swap(http: &Http, admin: &str, token: &str, probe: &str, bytes: Vec<u8>) -> Duration {
    let started = Instant::now();
    let body = deploy_user(http, admin, token, bytes).await;
    let version =
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["version"].to_string();
    loop {
        let response = http.request(get(probe)).await.unwrap();
        let answered_by = response.headers()["pitstop-version"].to_str().unwrap().to_string();
        let _ = response.into_body().collect().await;
        if answered_by == version {
            return started.elapsed();
        }
    }
}

/// `PUT /admin/components/user`; the answer's body.
async fn deploy_user(http: &Http, admin: &str, token: &str, bytes: Vec<u8>) -> Bytes {
    let request = http::Request::put(format!("{admin}/admin/components/user"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(bytes)))
        .unwrap();
    let response = http.request(request).await.unwrap();
    assert!(response.status().is_success());
    response.into_body().collect().await.unwrap().to_bytes()
}

fn get(uri: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(uri).body(Full::new(Bytes::new())).unwrap()
}

/// The component with a custom section appended: valid, same behaviour, new digest.
fn with_custom_section(wasm: &[u8], n: usize) -> Vec<u8> {
    let name = b"pitstop-bench";
    let payload = format!("{n}-{:?}", Instant::now());
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(payload.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // fits in one LEB128 byte
    out.extend_from_slice(&section);
    out
}

fn report(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label} n={:<3} median {:7.2} ms  p90 {:7.2} ms  max {:7.2} ms",
        samples.len(),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[samples.len() - 1])
    );
}

struct Load {
    latencies: Vec<Duration>,
    failures: u64,
    elapsed: Duration,
    swaps: u64,
}

impl Load {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn p99_ms(&self) -> f64 {
        self.latencies[self.latencies.len() * 99 / 100].as_secs_f64() * 1000.0
    }
    fn print(&self, label: &str) {
        let ms = |i: usize| self.latencies[i].as_secs_f64() * 1000.0;
        let n = self.latencies.len();
        println!(
            "{label} {:8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  failed {}  swaps {}",
            self.rate(),
            ms(n / 2),
            ms(n * 99 / 100),
            ms(n * 999 / 1000),
            self.failures,
            self.swaps
        );
    }
}

async fn load(http: &Http, probe: &str, swapping: Option<(&str, &str, &[Vec<u8>; 2])>) -> Load {
    let running = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, probe, running, failures) =
            (http.clone(), probe.to_string(), running.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while running.load(Ordering::Relaxed) {
                let started = Instant::now();
                match http.request(get(&probe)).await {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.into_body().collect().await;
                        latencies.push(started.elapsed());
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let started = Instant::now();
    let mut swaps = 0;
    while started.elapsed() < WINDOW {
        match swapping {
            Some((admin, token, twins)) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                deploy_user(http, admin, token, twins[(swaps % 2) as usize].clone()).await;
                swaps += 1;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    running.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    latencies.sort();
    Load { latencies, failures: failures.load(Ordering::Relaxed), elapsed, swaps }
}
