//! The runtime: compiles components, keeps the active versions, and runs one
//! invocation from a fresh instance to a response.
//!
//! - [`Runtime`] (here): the engines, the linkers and the guest pool; it
//!   prepares components and runs invocations and deliveries. What it
//!   shares with the rest of the host ([`parts::Parts`]: registry, metrics,
//!   keyspaces, queue) is built by whoever starts it and handed out there.
//! - [`prepare`]: a compiled component checked and pre-linked, then made a
//!   [`registry::Deployment`] with its breaker, bulkhead and turns.
//! - [`pipeline`]: one call from the gateway, a `services` call or the
//!   dispatcher, through breaker, bulkhead, injected faults and conflict
//!   reruns to an answer; [`call`] is where a request and an event
//!   delivery differ.
//! - [`instance`]: one invocation's instance (fresh, or warm from
//!   [`reuse`]), from its store to the commit.
//! - [`reuse`]: opt-in warm instances, one invocation at a time.
//! - [`commit`]: the invocation's writes and events, applied atomically.

pub mod artifacts;
pub mod backend;
mod call;
pub mod canary;
pub mod commit;
pub mod engine;
pub mod idempotency;
pub mod instance;
pub mod options;
mod outbound;
pub mod parts;
pub mod pipeline;
pub mod prepare;
pub mod proxy;
pub mod registry;
pub mod reuse;
pub mod scheduling;
pub mod state;
pub mod world;

pub use options::{ComponentSettings, RuntimeOptions};
pub use parts::Parts;
pub use pipeline::Invoked;
pub use prepare::{DeployError, Prepared};

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::capabilities::keyvalue::Usage;
use crate::events::dispatch::Deliveries;
use crate::events::{Dispatching, EventQueue};
use crate::metrics::Metrics;
use crate::resilience::connections::{ComponentConnections, HostConnections};
use crate::resilience::fault::Fault;
use crate::resilience::memory::{ComponentMemory, HostMemory};
use crate::runtime::artifacts::ArtifactCache;
use crate::runtime::engine::{Engines, EpochTicker, MemoryInit};
use crate::runtime::outbound::OutboundIo;
use crate::runtime::registry::Registry;
use crate::runtime::scheduling::GuestPool;
use crate::runtime::state::{ComponentState, HasComponentState};
use crate::storage::{KeyspaceStore, StorageError};

/// Compiles, holds and runs components. Shared as `Arc<Runtime>`.
pub struct Runtime {
    engines: Engines,
    /// One per engine: the copy engine's, then the image engine's.
    linkers: [Linker<ComponentState>; 2],
    registry: Arc<Registry>,
    bus: Arc<dyn EventQueue>,
    keyspaces: Arc<dyn KeyspaceStore>,
    faults: arc_swap::ArcSwap<HashMap<String, Fault>>,
    options: RuntimeOptions,
    metrics: Arc<Metrics>,
    // Per component name, so the count survives swaps.
    usage: std::sync::Mutex<HashMap<String, Arc<Usage>>>,
    /// What the host holds for guests, and per component name (so the
    /// count survives swaps).
    host_memory: Arc<HostMemory>,
    memory: std::sync::Mutex<HashMap<String, Arc<ComponentMemory>>>,
    guests: GuestPool,
    /// Where guests' outgoing connections run, apart from the gateway.
    outbound: OutboundIo,
    /// The caps on them, the host's and per component name.
    host_connections: Arc<HostConnections>,
    connections: std::sync::Mutex<HashMap<String, Arc<ComponentConnections>>>,
    /// Compiled components kept on disk ([`RuntimeOptions::artifact_dir`]).
    artifacts: Arc<ArtifactCache>,
    _ticker: EpochTicker,
}

/// Every interface a component can import: wasi 0.2 (with `wasi:http` and
/// `wasi:keyvalue`) and the platform's own capabilities. [`crate::runtime::world::PROVIDED`] lists the same names, so that a
/// deploy can be refused before compiling.
pub(crate) fn platform_linker<T: HasComponentState>(
    engine: &Engine,
) -> wasmtime::Result<Linker<T>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::capabilities::keyvalue::add_to_linker(&mut linker, |state: &mut T| {
        &mut state.component_state().kv
    })?;
    crate::capabilities::services::add_to_linker(&mut linker, |state: &mut T| {
        &mut state.component_state().services
    })?;
    crate::capabilities::log::add_to_linker(&mut linker, |state: &mut T| {
        &mut state.component_state().log
    })?;
    crate::capabilities::bus::add_to_linker(&mut linker, |state: &mut T| {
        &mut state.component_state().bus
    })?;
    crate::capabilities::http::add_to_linker(&mut linker)?;
    crate::capabilities::wasi_keyvalue::add_to_linker(&mut linker, |state: &mut T| {
        state.component_state().wasi_keyvalue()
    })?;
    crate::capabilities::poll::add_to_linker(&mut linker, |state: &mut T| {
        state.component_state().poll_view()
    })?;
    Ok(linker)
}

/// Why a runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine or the linker could not be built from the options.
    #[error("configuring the engine: {0:#}")]
    Engine(#[source] wasmtime::Error),
    /// The store could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A thread (the guest pool's, the flusher's) could not be started.
    #[error("starting threads: {0}")]
    Threads(#[from] std::io::Error),
    /// The artifact cache's directory could not be made.
    #[error("the artifact cache: {0}")]
    Artifacts(#[source] std::io::Error),
}

impl Runtime {
    /// A runtime over `parts`, which the rest of the host shares.
    pub fn start(parts: &Parts, options: RuntimeOptions) -> Result<Arc<Self>, StartError> {
        let Parts { keyspaces, bus, registry, metrics, .. } = parts.clone();
        let engines = Engines::build(&options.engine).map_err(StartError::Engine)?;
        let linkers = [
            platform_linker(engines.get(MemoryInit::Copy)).map_err(StartError::Engine)?,
            platform_linker(engines.get(MemoryInit::Image)).map_err(StartError::Engine)?,
        ];
        let artifacts = ArtifactCache::new(options.artifact_dir.clone(), engines.clone())
            .map_err(StartError::Artifacts)?;
        let ticker = EpochTicker::start(engines.clone());
        let guests = GuestPool::start(options.guest_threads)?;
        let host_memory = HostMemory::new(options.max_host_memory);
        let outbound = OutboundIo::start()?;
        let host_connections = HostConnections::new(options.max_host_connections);
        Ok(Arc::new(Runtime {
            engines,
            linkers,
            bus,
            keyspaces,
            faults: Default::default(),
            registry,
            options,
            metrics,
            usage: Default::default(),
            host_memory,
            memory: Default::default(),
            guests,
            outbound,
            host_connections,
            connections: Default::default(),
            artifacts: Arc::new(artifacts),
            _ticker: ticker,
        }))
    }

    /// The host's metrics.
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The active deployments.
    fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Make every call of `component` fail with `fault` (`None` heals it).
    pub fn inject_fault(&self, component: &str, fault: Option<Fault>) {
        self.faults.rcu(|current| {
            let mut next = HashMap::clone(current);
            match fault {
                Some(fault) => next.insert(component.to_string(), fault),
                None => next.remove(component),
            };
            next
        });
    }

    /// The event queue.
    fn bus(&self) -> &dyn EventQueue {
        &*self.bus
    }

    /// The event dispatcher, delivering to this runtime's components for
    /// as long as the future runs (spawn it).
    pub fn dispatch(self: &Arc<Self>) -> Dispatching {
        self.bus.clone().dispatch(Deliveries {
            subscribers: Arc::new(self.clone()),
            metrics: self.metrics.clone(),
            keyspaces: self.keyspaces.clone(),
        })
    }

    /// Wait until everything written so far is on disk.
    async fn flush(&self) -> Result<(), StorageError> {
        self.keyspaces.flush().await
    }

    /// The engine of components with little data (the test runner's).
    pub fn engine(&self) -> &Engine {
        self.engines.get(MemoryInit::Copy)
    }

    /// The linker for components compiled for `engine`.
    fn linker_for(&self, engine: &Engine) -> &Linker<ComponentState> {
        match self.engines.init_of(engine) {
            MemoryInit::Copy => &self.linkers[0],
            MemoryInit::Image => &self.linkers[1],
        }
    }

    /// Forget what is counted for `name` across its versions (its
    /// keyspace's usage, its host memory and connections): it was purged,
    /// and a new component of that name starts from nothing. Invocations
    /// still running keep their own counts until they end.
    pub fn forget(&self, name: &str) {
        self.usage.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        self.connections.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// Whether storage accepts a write and reads it back.
    fn check_storage(&self) -> Result<(), StorageError> {
        self.keyspaces.check()
    }
}
