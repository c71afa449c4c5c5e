//! Per-invocation cost inside the runtime, without HTTP: a fresh instance of
//! the user service handling `GET /users/{id}` (one keyvalue read), with
//! epoch interruption and store limits on (the default) and off; and the
//! circuit breaker's cost per call. Prints figures, asserts nothing.
//!
//! Run: `cargo bench -p pitstop-host --bench invoke`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pitstop_host::resilience::breaker::{Breaker, BreakerConfig, SystemClock};
use pitstop_host::runtime::{Parts, Runtime, RuntimeOptions};

const CALLS: usize = 20_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!(
        "instantiate + call, user GET /users/{{id}} (one keyvalue read), {CALLS} sequential calls:"
    );
    for (label, epoch, limits) in [
        ("epoch + limits on (default)", true, true),
        ("epoch off, limits on       ", false, true),
        ("epoch on, limits off       ", true, false),
        ("epoch + limits off         ", false, false),
    ] {
        let per_call = invoke_cost(epoch, limits).await;
        println!("  {label}  median {:6.1} us  p99 {:6.1} us", per_call.0, per_call.1);
    }

    let breaker = Breaker::new("bench".into(), BreakerConfig::default(), Arc::new(SystemClock));
    let started = Instant::now();
    let n = 1_000_000;
    for _ in 0..n {
        let permit = breaker.try_acquire().expect("closed");
        breaker.record(permit, true);
    }
    let ns = started.elapsed().as_nanos() as f64 / n as f64;
    println!("circuit breaker, try_acquire + record (uncontended): {ns:.0} ns per call");
}

async fn invoke_cost(epoch: bool, limits: bool) -> (f64, f64) {
    let dir = tempfile::TempDir::new().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let mut options = RuntimeOptions::default();
    options.engine.epoch_interruption = epoch;
    options.store_limits = limits;
    let parts = Parts::embedded(db, options.bus).unwrap();
    let runtime = Runtime::start(&parts, options).unwrap();
    let bytes = std::fs::read(concat!(env!("PITSTOP_BUILTIN_DIR"), "/user.wasm")).unwrap();
    let deployment = runtime.activate_unrecorded("user", &bytes).await.unwrap();
    deployment
        .keyspace
        .insert(b"user/usr_1", br#"{"id":"usr_1","name":"A","email":"a@example.com"}"#)
        .unwrap();
    let request = || http::Request::get("/users/usr_1").body(bytes::Bytes::new()).unwrap();
    for _ in 0..1000 {
        runtime.invoke("user", request(), None).await.unwrap();
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        let invoked = runtime.invoke("user", request(), None).await.unwrap();
        samples.push(started.elapsed());
        assert_eq!(invoked.response.status, 200);
    }
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(samples[CALLS / 2]), us(samples[CALLS * 99 / 100]))
}
