//! Message-bus and commit figures, in-process (no HTTP), with the built-in
//! user and order services: `POST /users` publishes `user.created`, which
//! the order service keeps in its read model.
//!
//! 1. the cost of the atomic commit per request: a read-only request, and a
//!    request writing two keys and publishing one event (transaction +
//!    flush); and the commit transaction alone;
//! 2. publish -> delivery latency: from the start of the publishing request
//!    to the subscriber's handler having committed, one event at a time;
//! 3. delivery throughput: events published by 8 concurrent callers, until
//!    the subscriber has handled them all.
//!
//! Run: `cargo bench -p pitstop-host --bench bus`. Figures, not assertions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pitstop_host::capabilities::keyvalue::{PendingWrite, Writes};
use pitstop_host::runtime::commit::{Effects, commit};
use pitstop_host::runtime::{Parts, Runtime, RuntimeOptions};
use pitstop_host::storage::embedded::keyspace_tree;

const SEQUENTIAL: usize = 1000;
const BURST: usize = 4000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let options = RuntimeOptions::default();
    let parts = Parts::embedded(db, options.bus).unwrap();
    let runtime = Runtime::start(&parts, options).unwrap();
    for name in ["user", "order"] {
        let bytes = std::fs::read(format!("{}/{name}.wasm", env!("PITSTOP_BUILTIN_DIR"))).unwrap();
        runtime.activate_unrecorded(name, &bytes).await.unwrap();
    }
    tokio::spawn(runtime.dispatch());
    let read_model = parts.db.open_tree(keyspace_tree("order")).unwrap();

    // 1. Commit cost.
    let first = create_user(&runtime, 0).await;
    let read = time(SEQUENTIAL, || {
        let runtime = runtime.clone();
        let path = format!("/users/{first}");
        async move {
            runtime.invoke("user", request("GET", &path, Vec::new()), None).await.unwrap();
        }
    })
    .await;
    let mut n = 1;
    let mut write = Vec::new();
    for _ in 0..SEQUENTIAL {
        let started = Instant::now();
        create_user(&runtime, n).await;
        write.push(started.elapsed());
        n += 1;
    }
    let deployment = parts.registry.get("user").unwrap();
    let mut transaction = Vec::new();
    for i in 0..SEQUENTIAL {
        let mut writes = Writes::default();
        writes.pending.insert(format!("bench/{i}"), PendingWrite::Put(vec![b'x'; 100]));
        writes.pending.insert(format!("bench/{i}/b"), PendingWrite::Put(vec![b'y'; 100]));
        let started = Instant::now();
        commit(&*parts.bus, &parts.metrics, &deployment, Effects { writes, ..Effects::default() })
            .unwrap();
        transaction.push(started.elapsed());
    }
    println!("commit cost per request ({SEQUENTIAL} sequential requests, in-process):");
    report("  GET /users/{id}: read-only, nothing to commit ", read);
    report("  POST /users: 2 keys + 1 event, commit + flush ", write);
    report("  the commit batch alone (2 keys, no flush)      ", transaction);

    // Let the deliveries of part 1 drain before measuring latency.
    wait_for(&read_model, n).await;

    // 2. Latency, one event at a time. A thread timestamps each insert into
    // the read model the moment sled reports it, which may be before the
    // publishing request has even returned (delivery runs while it flushes).
    let (handled_tx, handled_rx) = std::sync::mpsc::channel::<Instant>();
    let watch = read_model.watch_prefix("user/");
    std::thread::spawn(move || {
        for _event in watch {
            if handled_tx.send(Instant::now()).is_err() {
                return;
            }
        }
    });
    let mut latency = Vec::new();
    let mut request = Vec::new();
    for _ in 0..SEQUENTIAL {
        let started = Instant::now();
        create_user(&runtime, n).await;
        request.push(started.elapsed());
        let handled = tokio::task::block_in_place(|| {
            handled_rx.recv_timeout(Duration::from_secs(10)).expect("delivered within 10 s")
        });
        latency.push(handled - started);
        n += 1;
    }
    println!("publish -> delivery ({SEQUENTIAL} events, one at a time):");
    report("  the publishing request (commit + flush)        ", request);
    report("  its start to the handler's commit              ", latency);

    // 3. Throughput: 8 callers publish, one lane delivers in order.
    let before = read_model.scan_prefix("user/").count();
    let started = Instant::now();
    let callers: Vec<_> = (0..8)
        .map(|c| {
            let runtime = runtime.clone();
            tokio::spawn(async move {
                for i in 0..BURST / 8 {
                    create_user(&runtime, 1_000_000 + c * BURST + i).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let published = started.elapsed();
    wait_for(&read_model, before + BURST).await;
    let delivered = started.elapsed();
    println!("throughput ({BURST} events from 8 concurrent publishers, one subscriber lane):");
    println!(
        "  published {:6.0} events/s (each its own request: commit + flush)",
        BURST as f64 / published.as_secs_f64()
    );
    println!(
        "  delivered {:6.0} events/s, all handled after {delivered:.2?}",
        BURST as f64 / delivered.as_secs_f64()
    );
}

/// Register user number `n`; returns the id.
async fn create_user(runtime: &Arc<Runtime>, n: usize) -> String {
    let body = format!(r#"{{"name":"U{n}","email":"u{n}@example.com"}}"#).into_bytes();
    let invoked = runtime.invoke("user", request("POST", "/users", body), None).await.unwrap();
    assert_eq!(invoked.response.status, 201);
    let user: serde_json::Value = serde_json::from_slice(&invoked.response.body).unwrap();
    user["id"].as_str().unwrap().to_string()
}

/// Until the order's read model holds `count` users.
async fn wait_for(read_model: &sled::Tree, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while read_model.scan_prefix("user/").count() < count {
        assert!(Instant::now() < deadline, "deliveries stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn request(method: &str, path: &str, body: Vec<u8>) -> http::Request<bytes::Bytes> {
    let request = http::Request::builder().method(method).uri(path);
    let request = request.header(http::header::CONTENT_TYPE, "application/json");
    request.body(body.into()).unwrap()
}

async fn time<F, Fut>(n: usize, mut f: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        f().await;
        samples.push(started.elapsed());
    }
    samples
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p = |q: f64| us(samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]);
    println!("{label}  p50 {:8.1} us  p99 {:8.1} us", p(0.5), p(0.99));
}
