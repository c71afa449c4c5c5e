//! What one invocation's [`wasmtime::Store`] holds.

use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
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
    pub(crate) limits: StoreLimits,
}

impl ComponentState {
    /// State for one invocation, whose output counts against `output`.
    pub fn new(
        output: Arc<OutputBudget>,
        kv: KeyvalueCtx,
        services: ServicesCtx,
        bus: BusCtx,
        limits: StoreLimits,
    ) -> Self {
        let wasi = wasi_ctx(&output);
        Self::with_wasi(output, wasi, kv, services, bus, limits)
    }

    /// State with a WASI context of the caller's making (the test runner's
    /// passes arguments and the terminal through).
    pub fn with_wasi(
        output: Arc<OutputBudget>,
        wasi: WasiCtx,
        kv: KeyvalueCtx,
        services: ServicesCtx,
        bus: BusCtx,
        limits: StoreLimits,
    ) -> Self {
        ComponentState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHttp::new(services.caller(), None),
            kv,
            cas: CasTable::default(),
            services,
            bus,
            log: LogCtx::new(output),
            limits,
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
