//! What one invocation's [`wasmtime::Store`] holds.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capabilities::bus::BusCtx;
use crate::capabilities::http::Network;
use crate::capabilities::http::OutboundHttp;
use crate::capabilities::keyvalue::KeyvalueCtx;
use crate::capabilities::log::{GuestOutput, LogCtx, OutputBudget, Stream};
use crate::capabilities::poll::PollView;
use crate::capabilities::services::ServicesCtx;
use crate::capabilities::wasi_keyvalue::{CasTable, WasiKeyvalue};
use crate::resilience::memory::Charge;

/// The store data of one invocation: WASI, one resource table, and one
/// context per capability, each scoped to the invoked component.
pub struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outbound: OutboundHttp,
    pub(crate) kv: KeyvalueCtx,
    cas: CasTable,
    pub(crate) services: ServicesCtx,
    pub(crate) bus: BusCtx,
    pub(crate) log: LogCtx,
    pub(crate) limits: MemoryWatch,
}

impl ComponentState {
    /// State for one invocation, whose output counts against `output`.
    pub fn new(
        output: Arc<OutputBudget>,
        kv: KeyvalueCtx,
        services: ServicesCtx,
        bus: BusCtx,
        limits: StoreLimits,
        linear: Charge,
    ) -> Self {
        let wasi = wasi_ctx(&output);
        Self::with_wasi(output, wasi, kv, services, bus, limits, linear)
    }

    /// State with a WASI context of the caller's making (the test runner's
    /// passes arguments and the terminal through). `linear` is charged for
    /// its linear memories as they grow.
    #[allow(clippy::too_many_arguments)]
    pub fn with_wasi(
        output: Arc<OutputBudget>,
        wasi: WasiCtx,
        kv: KeyvalueCtx,
        services: ServicesCtx,
        bus: BusCtx,
        limits: StoreLimits,
        linear: Charge,
    ) -> Self {
        ComponentState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHttp::new(services.caller(), None),
            kv,
            cas: CasTable::new(),
            services,
            bus,
            log: LogCtx::new(output),
            limits: MemoryWatch { limits, peak: 0, linear },
        }
    }
}

impl ComponentState {
    /// Let outgoing requests reach the hosts `network` allows (a
    /// component's `allowed_outbound_hosts`); none by default.
    pub fn allow_outbound(mut self, network: Network) -> Self {
        self.outbound = OutboundHttp::new(self.services.caller(), Some(network));
        self
    }

    /// Start an invocation on a reused instance ([`crate::runtime::reuse`]):
    /// the write set, the calls' identity, deadline and turn, the trace and
    /// the output budget become this invocation's; what the guest holds
    /// (its memory, WASI resources) stays.
    pub(crate) fn begin(&mut self, kv: KeyvalueCtx, services: ServicesCtx, bus: BusCtx) {
        self.outbound.serve(services.caller());
        self.kv = kv;
        self.services = services;
        self.bus = bus;
        // A handle of the last invocation names nothing in this one's table.
        self.cas = CasTable::new();
        self.log.renew();
    }

    /// The invocation has ended and the instance waits for the next: let go
    /// of its turn and of the runtime its calls went to.
    pub(crate) fn park(&mut self) {
        self.services = self.services.parked();
        self.outbound.serve(self.services.caller());
    }

    /// The invocation is done: close the outgoing connections it opened.
    pub(crate) fn close_connections(&mut self) {
        self.outbound.close_connections();
    }

    /// The size of the largest linear memory of the store, in bytes, as
    /// far as it grew (0 when limits are off).
    pub(crate) fn peak_memory(&self) -> usize {
        self.limits.peak
    }

    /// What `wasi:keyvalue` works on: the keyspace context and the `cas`
    /// handles.
    pub(crate) fn wasi_keyvalue(&mut self) -> WasiKeyvalue<'_> {
        WasiKeyvalue { kv: &mut self.kv, cas: &mut self.cas }
    }

    /// What `wasi:io/poll` needs: the resource table, and whose turn a
    /// blocked guest gives up.
    pub(crate) fn poll_view(&mut self) -> PollView<'_> {
        PollView { table: &mut self.table, caller: self.services.caller_ref() }
    }
}

/// The store's limits, watching how far its linear memories grew and
/// charging their growth to the component's host memory.
pub(crate) struct MemoryWatch {
    limits: StoreLimits,
    /// The largest size any linear memory was allowed to grow to.
    peak: usize,
    /// What its linear memories hold, charged to the component and the
    /// host: given back when the store is dropped.
    linear: Charge,
}

impl ResourceLimiter for MemoryWatch {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            // Refused: the guest traps with the limit named (a guest whose
            // allocation fails traps anyway, and this says why).
            let more = desired.saturating_sub(current) as u64;
            self.linear.grow("growing linear memory", more)?;
            self.peak = self.peak.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Most bytes one `get-random-bytes` call may ask for. A host call is not
/// time-sliced, and wasmtime's default (64 MiB) took about half a second of
/// a guest thread; a megabyte takes a few milliseconds, and a guest needing
/// more asks again.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// WASI grants stdio (into tracing), clocks and random, and nothing else: no
/// preopened directory, no environment, no socket address is allowed.
fn wasi_ctx(output: &Arc<OutputBudget>) -> WasiCtx {
    WasiCtx::builder()
        .max_random_size(MAX_RANDOM_BYTES)
        .stdout(GuestOutput::new(output.clone(), Stream::Stdout))
        .stderr(GuestOutput::new(output.clone(), Stream::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// Store data holding a [`ComponentState`]: the platform's linker
/// ([`crate::runtime::platform_linker`]) works for any of them, so the test
/// runner's store adds what only tests have beside it.
pub trait HasComponentState: WasiView + WasiHttpView + Send + 'static {
    /// The invocation's state.
    fn component_state(&mut self) -> &mut ComponentState;
}

impl HasComponentState for ComponentState {
    fn component_state(&mut self) -> &mut ComponentState {
        self
    }
}

/// `wasi:http` shares the resource table with WASI: its bodies are
/// `wasi:io` streams.
impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
