//! Criterion micro-benchmarks of the hot path, in-process (no HTTP):
//!
//! - instantiate + call of the hello test component, and of the user
//!   service's `GET /users/{id}` (one keyvalue read);
//! - keyvalue get and set through the host's capability, without wasm;
//! - building the fresh WASI context every invocation gets;
//! - the circuit breaker's admission and record;
//! - gateway work per request: HS256 verification and the trace context.
//!
//! Run: `cargo bench -p pitstop-host --bench micro` (figures in
//! target/criterion; goals in BENCHMARKS.md, never asserted).

mod support;

use std::sync::Arc;

use criterion::Criterion;
use futures::FutureExt;
use pitstop_gateway::TraceContext;
use pitstop_gateway::auth::{Access, AuthSettings, Authenticator, JwtSettings};
use pitstop_host::bindings::keyvalue::Host as _;
use pitstop_host::capabilities::keyvalue::{KeyvalueCtx, Usage, WriteLimits};
use pitstop_host::metrics::ComponentMetrics;
use pitstop_host::resilience::breaker::{Breaker, BreakerConfig, SystemClock};
use pitstop_host::resilience::memory::HostMemory;
use pitstop_host::runtime::{Parts, Runtime, RuntimeOptions};
use pitstop_host::storage::KeyspaceStore;
use pitstop_host::storage::embedded::SledStore;

/// The hello test component, built once for the wasm32-wasip2 target.
fn hello_wasm() -> Vec<u8> {
    std::fs::read(support::build_test_component("hello")).unwrap()
}

fn request(path: &str) -> http::Request<bytes::Bytes> {
    http::Request::get(path).body(bytes::Bytes::new()).unwrap()
}

fn invocations(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The runtime registers with the tokio runtime it starts in.
    let _entered = rt.enter();
    let dir = tempfile::TempDir::new().unwrap();
    let options = RuntimeOptions::default();
    let parts = Parts::embedded(sled::open(dir.path()).unwrap(), options.bus).unwrap();
    let runtime = Runtime::start(&parts, options).unwrap();
    let user = std::fs::read(concat!(env!("PITSTOP_BUILTIN_DIR"), "/user.wasm")).unwrap();
    rt.block_on(async {
        runtime.activate_unrecorded("hello", &hello_wasm()).await.unwrap();
        let user = runtime.activate_unrecorded("user", &user).await.unwrap();
        user.keyspace
            .insert(b"user/usr_1", br#"{"id":"usr_1","name":"A","email":"a@example.com"}"#)
            .unwrap();
    });
    let mut group = c.benchmark_group("instantiate + call");
    group.bench_function("hello GET /hello", |b| {
        b.to_async(&rt).iter(|| async {
            let invoked = runtime.invoke("hello", request("/hello"), None).await.unwrap();
            assert_eq!(invoked.response.status, 200);
        })
    });
    group.bench_function("user GET /users/{id} (one keyvalue read)", |b| {
        b.to_async(&rt).iter(|| async {
            let invoked = runtime.invoke("user", request("/users/usr_1"), None).await.unwrap();
            assert_eq!(invoked.response.status, 200);
        })
    });
    group.finish();
}

fn keyvalue(c: &mut Criterion) {
    let dir = tempfile::TempDir::new().unwrap();
    let store = SledStore::new(sled::open(dir.path()).unwrap()).unwrap();
    let tree = store.open("bench").unwrap();
    tree.insert(b"key", &[7u8; 100]).unwrap();
    let usage = Arc::new(Usage::scan(&*tree, u64::MAX));
    let metrics = ComponentMetrics::detached();
    let memory = HostMemory::new(u64::MAX).component("bench", u64::MAX);
    let limits = WriteLimits { max_write_set: u64::MAX, max_result: u64::MAX };
    let ctx =
        || KeyvalueCtx::new(tree.clone(), usage.clone(), limits, memory.clone(), metrics.clone());
    let mut group = c.benchmark_group("keyvalue through the host");
    group.bench_function("get (100-byte value)", |b| {
        let mut ctx = ctx();
        // The host functions never wait: one poll completes them.
        b.iter(|| ctx.get("key".into()).now_or_never().unwrap().unwrap().unwrap())
    });
    group.bench_function("set (100-byte value, buffered until commit)", |b| {
        let mut ctx = ctx();
        b.iter(|| ctx.set("key".into(), vec![1u8; 100]).now_or_never().unwrap().unwrap())
    });
    group.finish();
}

fn wasi(c: &mut Criterion) {
    // What every invocation builds before instantiating: is a fresh WASI
    // context a cost worth sharing?
    c.bench_function("a fresh WASI context (builder + build)", |b| {
        b.iter(|| wasmtime_wasi::WasiCtx::builder().allow_tcp(false).build())
    });
}

fn breaker(c: &mut Criterion) {
    let breaker = Breaker::new("bench".into(), BreakerConfig::default(), Arc::new(SystemClock));
    c.bench_function("circuit breaker: try_acquire + record", |b| {
        b.iter(|| {
            let permit = breaker.try_acquire().expect("closed");
            breaker.record(permit, true);
        })
    });
}

fn gateway(c: &mut Criterion) {
    let secret = b"a-benchmark-secret-of-32-bytes-or-more".to_vec();
    let auth = Authenticator::new(&AuthSettings {
        jwt: Some(JwtSettings {
            secret: Some(secret.clone()),
            leeway_secs: 30,
            ..Default::default()
        }),
        api_keys: Default::default(),
    })
    .unwrap();
    let claims = serde_json::json!({"sub": "bench", "exp": u32::MAX});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret).unwrap(),
    )
    .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    c.bench_function("gateway: verify an HS256 token", |b| {
        b.iter(|| auth.check(Access::Jwt, &headers).unwrap().unwrap())
    });
    let parent = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    c.bench_function("gateway: span + trace context (no exporter)", |b| {
        b.iter(|| {
            let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
            TraceContext::attach(&span, parent)
        })
    });
}

// The macro's function has no doc comment of its own.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(
        benches,
        super::invocations,
        super::wasi,
        super::keyvalue,
        super::breaker,
        super::gateway
    );
}

fn main() {
    group::benches();
    Criterion::default().configure_from_args().final_summary();
    println!(
        "goal (performance issue): instantiate + call of hello <= 10 us median; \
         figures and what limits them in BENCHMARKS.md"
    );
}
