//! `[components.NAME]`: where a component is loaded from, its limits, its
//! outbound hosts and its instance reuse.

use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::Deserialize;

use crate::capabilities::http::allowlist::AllowedHost;
use crate::resilience::breaker::BreakerConfig;

/// A component: where to load it from (optional) and its limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// The `.wasm` component to deploy at start; relative paths are relative
    /// to the config file. Without it the section only sets limits (for a
    /// built-in or a component deployed through the admin API).
    pub path: Option<PathBuf>,
    /// Deadline of one request in milliseconds (default: `[runtime]`'s).
    pub deadline_ms: Option<u64>,
    /// Linear memory limit per instance, in bytes.
    pub max_memory: Option<usize>,
    /// Instances running at once (the bulkhead).
    pub max_concurrency: Option<u32>,
    /// Instances executing guest code at once (default: one per guest thread).
    pub max_parallel: Option<NonZeroU32>,
    /// Lines of output (stdout, stderr, `log`) one invocation may write.
    pub max_log_lines: Option<u64>,
    /// Bytes of output one invocation may write.
    pub max_log_bytes: Option<u64>,
    /// Circuit breaker thresholds; unset fields keep their defaults.
    pub breaker: Option<BreakerConfig>,
    /// Bytes (keys plus values) its keyspace may hold.
    pub max_keyspace_bytes: Option<u64>,
    /// Bytes (keys plus values) one invocation may write.
    pub max_write_set_bytes: Option<u64>,
    /// Host memory all its instances together may hold: their linear
    /// memories and what host calls hold for them (default: a quarter of
    /// `[runtime] max_host_memory`).
    pub max_component_memory: Option<u64>,
    /// Outgoing connections its instances may hold open at once (default 128).
    pub max_outbound_connections: Option<usize>,
    /// Seconds the answer to a write sent with an `Idempotency-Key` is kept
    /// for its retries (default: a day).
    pub idempotency_ttl_s: Option<u64>,
    /// Hosts its outgoing `wasi:http` requests may reach, as
    /// `[http[s]://]HOST[:PORT]` (`*.example.com` for every name below
    /// it); everything else is refused. `NAME.svc` needs no entry.
    pub allowed_outbound_hosts: Option<Vec<AllowedHost>>,
    /// Serve requests on warm instances instead of a fresh one each
    /// (`reuse = { max_requests = 1000 }`); see `runtime::reuse`.
    pub reuse: Option<ReuseConfig>,
}

/// `reuse` of a component: how long one instance serves.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReuseConfig {
    /// Invocations one instance serves before it is discarded (default 1000).
    pub max_requests: Option<NonZeroU32>,
    /// An instance whose largest linear memory grew past this many bytes is
    /// discarded after its invocation (default: half the component's
    /// `max_memory`).
    pub max_memory: Option<usize>,
}

/// Invocations a reused instance serves when `reuse` does not say.
pub(super) const DEFAULT_REUSE_REQUESTS: u32 = 1000;
