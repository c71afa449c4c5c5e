//! The runtime's tunables, and the limits of each component's invocations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::capabilities::http::allowlist::AllowedHost;
use crate::capabilities::log::OutputLimits;
use crate::events::queue::BusOptions;
use crate::resilience::breaker::BreakerConfig;
use crate::resilience::connections::HostConnections;
use crate::resilience::memory::HostMemory;
use crate::runtime::engine::EngineLimits;
use crate::runtime::reuse::ReusePolicy;

/// Tunables of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Pool sizes and the largest memory any instance may have.
    pub engine: EngineLimits,
    /// How deep a chain of `services` calls may go.
    pub max_call_depth: u32,
    /// Limits of components without settings of their own.
    pub defaults: ComponentSettings,
    /// Per-component limits, by name.
    pub components: HashMap<String, ComponentSettings>,
    /// Enforce the per-store limits (memory, instances, tables). Only
    /// benchmarks turn it off, to measure what it costs.
    pub store_limits: bool,
    /// Retry and dead-letter rules of the message bus.
    pub bus: BusOptions,
    /// Threads of the guest pool (default: one per CPU).
    pub guest_threads: usize,
    /// The gateway's limit on a response body: a `wasi:http` component's
    /// body is read up to one byte past it, and no further.
    pub max_response_body: usize,
    /// Bytes the host may hold for all guests together: their linear
    /// memories and what host calls hold for them
    /// ([`crate::resilience::memory`]).
    pub max_host_memory: u64,
    /// Outgoing connections open at once on this host
    /// ([`crate::resilience::connections`]).
    pub max_host_connections: usize,
    /// Where compiled components are kept, so that restarts and rollbacks
    /// do not compile again ([`crate::runtime::artifacts`]); `None`, every
    /// deploy compiles.
    pub artifact_dir: Option<std::path::PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            engine: EngineLimits::default(),
            max_call_depth: 8,
            defaults: ComponentSettings::default(),
            components: HashMap::new(),
            store_limits: true,
            bus: BusOptions::default(),
            guest_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_response_body: 1 << 20,
            max_host_memory: HostMemory::default_limit(),
            max_host_connections: HostConnections::default_limit(),
            artifact_dir: None,
        }
    }
}

/// Limits that apply to each invocation of one component.
#[derive(Debug, Clone)]
pub struct ComponentSettings {
    /// How long one request (with every call it makes) may take.
    pub deadline: Duration,
    /// Linear memory one instance may grow to, in bytes.
    pub max_memory: usize,
    /// Instances running at once (the bulkhead); as many more may wait for
    /// a slot until their deadline, and beyond that calls get 503.
    pub max_concurrency: u32,
    /// Instances executing guest code at once (see [`crate::runtime::scheduling`]);
    /// `None`: as many as the guest pool has threads.
    pub max_parallel: Option<u32>,
    /// What one invocation may write to the log.
    pub output: OutputLimits,
    /// When its circuit opens.
    pub breaker: BreakerConfig,
    /// Bytes (keys plus values) its keyspace may hold.
    pub max_keyspace_bytes: u64,
    /// Bytes (keys plus values) one invocation may write before it commits.
    pub max_write_set_bytes: u64,
    /// Hosts its outgoing `wasi:http` requests may reach; none by default.
    pub allowed_outbound_hosts: Arc<[AllowedHost]>,
    /// Serve invocations on warm instances ([`crate::runtime::reuse`]);
    /// `None`, the default: a fresh instance for each.
    pub reuse: Option<ReusePolicy>,
    /// Host memory all its instances together may hold (linear memories
    /// and what host calls hold for them); `None`: a quarter of
    /// [`RuntimeOptions::max_host_memory`].
    pub max_component_memory: Option<u64>,
    /// Outgoing connections its instances may hold open at once.
    pub max_outbound_connections: usize,
    /// How long the answer to a write sent with an `Idempotency-Key` is
    /// kept for its retries.
    pub idempotency_ttl: Duration,
}

impl Default for ComponentSettings {
    fn default() -> Self {
        ComponentSettings {
            deadline: Duration::from_secs(5),
            max_memory: 64 << 20,
            max_concurrency: 100,
            max_parallel: None,
            output: OutputLimits::default(),
            breaker: BreakerConfig::default(),
            max_keyspace_bytes: 256 << 20,
            max_write_set_bytes: 16 << 20,
            allowed_outbound_hosts: Arc::from([]),
            reuse: None,
            max_component_memory: None,
            max_outbound_connections: 128,
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl RuntimeOptions {
    /// The settings of `component`.
    pub fn settings(&self, component: &str) -> &ComponentSettings {
        self.components.get(component).unwrap_or(&self.defaults)
    }

    /// The host memory `component` may hold.
    pub fn component_memory(&self, component: &str) -> u64 {
        let share = self.max_host_memory / 4;
        self.settings(component).max_component_memory.unwrap_or(share)
    }
}
