//! `pitstop test-runner`'s engine: a component crate's test binary, run as
//! wasm inside the platform ([`super::suite`] decides what to run and
//! reports).
//!
//! `cargo test --target wasm32-wasip2` in a component crate builds its
//! `#[test]`s into a wasip2 command; with this as the target's `runner`
//! (see `components/.cargo/config.toml`) cargo hands each test binary here.
//! The binary runs with the imports a deployed component has, plus
//! `testing`:
//!
//! - `keyvalue`: a fresh keyspace per run (the suite runs each test alone),
//!   in a temporary store that is deleted afterwards. A run is one
//!   invocation, so nothing is committed and every read sees the test's own
//!   writes.
//! - `bus`: publishing is checked against the topics the crate declares and
//!   recorded, never delivered; `testing.published` returns the record.
//! - `services`: answered by the stubs the test sets up with
//!   `testing.stub-service`, else by the real components loaded with
//!   `--component NAME=PATH`, else `not-found`.
//!
//! Each [`TestBinary::run`] passes the harness its arguments and sends its
//! output to the terminal or a buffer; the exit status, and the trap when a
//! failing test aborted it (wasm has no unwinding), are the caller's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Store, StoreLimitsBuilder};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use crate::bindings::events;
use crate::bindings::services::CallError;
use crate::bindings::testing::{self, PublishedEvent};
use crate::bindings::types::{Request, Response};
use crate::capabilities::bus::{BusCtx, Topics};
use crate::capabilities::keyvalue::{KeyvalueCtx, Usage, WriteLimits};
use crate::capabilities::log::{OutputBudget, OutputLimits};
use crate::capabilities::services::ServicesCtx;
use crate::invoke::CallContext;
use crate::resilience::memory::HostMemory;
use crate::resilience::turns::Turn;
use crate::runtime::instance::ticks;
use crate::runtime::state::{ComponentState, HasComponentState};
use crate::runtime::{Parts, Runtime, RuntimeOptions, platform_linker};
use crate::testing::stubs::StubbedServices;

/// How long one test binary may run.
const TEST_DEADLINE: Duration = Duration::from_secs(600);

/// What to run.
#[derive(Debug)]
pub struct TestRun {
    /// The test binary (a wasip2 command component).
    pub wasm: PathBuf,
    /// Arguments for the test harness.
    pub args: Vec<String>,
    /// Real components to answer `services` calls no stub answers.
    pub components: Vec<(String, PathBuf)>,
}

/// A test binary compiled and linked once, run as many times as asked,
/// each run in a fresh instance with a fresh keyspace.
pub struct TestBinary {
    runtime: Arc<Runtime>,
    /// Where each run's keyspace is opened.
    keyspaces: Arc<dyn crate::storage::KeyspaceStore>,
    component: Component,
    pre: wasmtime::component::InstancePre<TestState>,
    program: String,
    runs: std::sync::atomic::AtomicUsize,
}

/// Where a run's output goes.
pub enum Output {
    /// The terminal's stdout and stderr.
    Inherit,
    /// A buffer, stdout and stderr interleaved as written.
    Capture(MemoryOutputPipe),
}

/// How a run ended: the exit status, and the trap if the binary trapped (a
/// failing test aborts it: wasm has no unwinding).
pub struct Ran {
    /// 0 when every test run passed.
    pub status: i32,
    /// The trap, with its wasm backtrace.
    pub trap: Option<wasmtime::Error>,
}

impl TestBinary {
    /// Compile and link `test.wasm`, and load the real components it names.
    pub async fn load(test: &TestRun) -> anyhow::Result<Self> {
        let db = sled::Config::new().temporary(true).open().context("opening a temporary store")?;
        let options = RuntimeOptions::default();
        let parts = Parts::embedded(db, options.bus)?;
        let runtime = Runtime::start(&parts, options)?;
        for (name, path) in &test.components {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            runtime
                .activate_unrecorded(name, &bytes)
                .await
                .with_context(|| format!("loading {name}"))?;
        }
        let mut linker: Linker<TestState> = platform_linker(runtime.engine())?;
        testing::add_to_linker::<_, HasSelf<TestState>>(&mut linker, |state| state)?;
        let component = explain(
            Component::from_file(runtime.engine(), &test.wasm),
            format!("loading the test binary {}", test.wasm.display()),
        )?;
        let pre = explain(
            linker.instantiate_pre(&component),
            "the test binary imports something the platform does not provide",
        )?;
        let program = test.wasm.file_name().map(|n| n.to_string_lossy().into_owned());
        let program = program.unwrap_or_else(|| "test".into());
        let keyspaces = parts.keyspaces;
        Ok(TestBinary { runtime, keyspaces, component, pre, program, runs: Default::default() })
    }

    /// Run the binary's `main` with the harness arguments `args`.
    pub async fn run(&self, args: &[String], output: Output) -> anyhow::Result<Ran> {
        let runtime = &self.runtime;
        let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name: Arc<str> = "test".into();
        // A keyspace of its own for each run: one test's writes are not the next's.
        let keyspace = self.keyspaces.open(&format!("test-{run}"))?;
        let usage = Arc::new(Usage::scan(&*keyspace, u64::MAX));
        let trace = pitstop_gateway::TraceContext::new_root();
        let call = CallContext { depth: 0, deadline: Instant::now() + TEST_DEADLINE, trace };
        let mut wasi = WasiCtx::builder();
        match output {
            Output::Inherit => wasi.inherit_stdout().inherit_stderr(),
            Output::Capture(pipe) => wasi.stdout(pipe.clone()).stderr(pipe),
        };
        wasi.arg(&self.program).args(args);
        // The harness reads RUST_TEST_THREADS, RUST_BACKTRACE and friends.
        for (key, value) in std::env::vars().filter(|(k, _)| k.starts_with("RUST_")) {
            wasi.env(key, value);
        }
        let metrics = crate::metrics::ComponentMetrics::detached();
        // A test binary's output goes to the terminal, so it is not capped.
        let unlimited = OutputLimits { max_lines: u64::MAX, max_bytes: u64::MAX };
        let output = OutputBudget::new(name.clone(), unlimited, metrics.log_dropped.clone());
        let services = Arc::new(StubbedServices::new(runtime.clone()));
        // Tests run one at a time, on a developer's machine: no share to keep.
        let memory = HostMemory::new(u64::MAX).component(&name, u64::MAX);
        let unbounded = WriteLimits { max_write_set: u64::MAX, max_result: u64::MAX };
        let state = ComponentState::with_wasi(
            output,
            wasi.build(),
            KeyvalueCtx::new(keyspace, usage, unbounded, memory.clone(), metrics),
            ServicesCtx::new(services.clone(), name, call, Turn::unlimited(), memory.clone()),
            BusCtx::new(Arc::default(), trace, memory.clone()),
            StoreLimitsBuilder::new().build(),
            memory.empty(),
        );
        let state = TestState { component: state, services };
        let mut store = Store::new(runtime.engine(), state);
        store.set_epoch_deadline(ticks(TEST_DEADLINE));

        let instance =
            explain(self.pre.instantiate_async(&mut store).await, "instantiating the tests")?;
        // The crate's declared topics govern what its tests may publish.
        if self.component.get_export_index(None, "pitstop:platform/events@0.1.0").is_some() {
            let declared = explain(
                events::GuestIndices::new(&self.pre)?
                    .load(&mut store, &instance)?
                    .call_declare(&mut store)
                    .await,
                "calling the crate's events.declare",
            )?;
            let topics = Topics::declared(declared.publishes, declared.subscribes)
                .map_err(|e| anyhow::anyhow!("the crate's events.declare: {e}"))?;
            store.data_mut().component.bus = BusCtx::new(Arc::new(topics), trace, memory);
        }
        let command = explain(
            Command::new(&mut store, &instance),
            "the test binary is not a wasi:cli command",
        )?;
        let ran = |status, trap| Ok(Ran { status, trap });
        match command.wasi_cli_run().call_run(&mut store).await {
            Ok(Ok(())) => ran(0, None),
            Ok(Err(())) => ran(1, None),
            Err(error) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => ran(exit.0, None),
                None => ran(101, Some(error)),
            },
        }
    }
}

/// `result`, its error said in the words of `what`.
fn explain<T>(result: wasmtime::Result<T>, what: impl std::fmt::Display) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("{what}: {e:#}"))
}

/// A test binary's store: a component's state, and the stubs its
/// `testing` import sets up in front of the real components.
struct TestState {
    component: ComponentState,
    services: Arc<StubbedServices>,
}

impl WasiView for TestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.component.ctx()
    }
}

impl WasiHttpView for TestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.component.http()
    }
}

impl HasComponentState for TestState {
    fn component_state(&mut self) -> &mut ComponentState {
        &mut self.component
    }
}

impl testing::Host for TestState {
    async fn published(&mut self) -> Vec<PublishedEvent> {
        self.component
            .bus
            .outgoing()
            .iter()
            .map(|e| PublishedEvent {
                topic: e.topic.clone(),
                payload: e.payload.clone(),
                delay_ms: e.delay.as_millis() as u64,
            })
            .collect()
    }

    async fn clear_published(&mut self) {
        self.component.bus.take_outgoing();
    }

    async fn stub_service(
        &mut self,
        name: String,
        method: String,
        path_prefix: String,
        reply: Result<Response, CallError>,
    ) {
        self.services.stubs().add(name, method, path_prefix, reply);
    }

    async fn clear_stubs(&mut self) {
        self.services.stubs().clear();
    }

    async fn calls(&mut self, name: String) -> Vec<Request> {
        self.services.stubs().calls(&name)
    }
}
