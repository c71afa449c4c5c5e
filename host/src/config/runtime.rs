//! `[runtime]`: host-wide limits and every component's defaults, and the
//! runtime's options made from it and the `[components.NAME]` sections.

use std::num::{NonZeroU32, NonZeroUsize};

use serde::Deserialize;

use super::Config;
use super::component::DEFAULT_REUSE_REQUESTS;
use crate::resilience::breaker::BreakerConfig;
use crate::runtime::reuse::ReusePolicy;
use crate::runtime::{ComponentSettings, RuntimeOptions};

/// `[runtime]`: host-wide limits and the defaults of every component.
///
/// The limit fields repeat those of [`crate::config::ComponentConfig`] rather than sharing a
/// flattened struct: serde cannot combine `flatten` with `deny_unknown_fields`,
/// and rejecting typos matters more here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Deadline of one request in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Deepest chain of `services` calls.
    pub max_call_depth: Option<u32>,
    /// Linear memory limit per instance, in bytes.
    pub max_memory: Option<usize>,
    /// Instances alive at once across the host.
    pub max_instances: Option<u32>,
    /// Instances of one component running at once.
    pub max_concurrency: Option<u32>,
    /// Instances of one component executing guest code at once.
    pub max_parallel: Option<NonZeroU32>,
    /// Lines of output one invocation may write.
    pub max_log_lines: Option<u64>,
    /// Bytes of output one invocation may write.
    pub max_log_bytes: Option<u64>,
    /// Threads guest code runs on (default: one per CPU).
    pub guest_threads: Option<NonZeroUsize>,
    /// Circuit breaker thresholds.
    pub breaker: Option<BreakerConfig>,
    /// Bytes (keys plus values) one keyspace may hold.
    pub max_keyspace_bytes: Option<u64>,
    /// Bytes (keys plus values) one invocation may write.
    pub max_write_set_bytes: Option<u64>,
    /// Host memory each component may hold (default: a quarter of
    /// `max_host_memory`).
    pub max_component_memory: Option<u64>,
    /// Host memory all components together may hold (default: half of the
    /// machine's memory, or of the process's cgroup limit).
    pub max_host_memory: Option<u64>,
    /// Bytes kept free on the data dir's disk: below it writes get 507
    /// (default: 5% of the filesystem, at most 1 GiB).
    pub min_free_disk_bytes: Option<u64>,
    /// Bytes of the embedded store's page cache (sled's `cache_capacity`;
    /// default [`crate::storage::embedded::DEFAULT_CACHE_BYTES`]).
    pub storage_cache_bytes: Option<u64>,
    /// Outgoing connections each component may hold open (default 128).
    pub max_outbound_connections: Option<usize>,
    /// Outgoing connections all components together may hold open
    /// (default: half the process's file descriptor limit, at most 16,384).
    pub max_host_connections: Option<usize>,
    /// Seconds the answer to a write sent with an `Idempotency-Key` is kept
    /// for its retries (default: a day).
    pub idempotency_ttl_s: Option<u64>,
}

impl Config {
    /// The runtime's options: `[runtime]` over the built-in defaults, and
    /// each `[components.NAME]` over those.
    pub fn runtime_options(&self) -> RuntimeOptions {
        let runtime = &self.runtime;
        let mut options = RuntimeOptions::default();
        if let Some(depth) = runtime.max_call_depth {
            options.max_call_depth = depth;
        }
        if let Some(count) = runtime.max_instances {
            options.engine.max_instances = count;
        }
        if let Some(threads) = runtime.guest_threads {
            options.guest_threads = threads.get();
        }
        if let Some(bytes) = self.gateway.max_response_body {
            options.max_response_body = bytes;
        }
        if let Some(bytes) = runtime.max_host_memory {
            options.max_host_memory = bytes;
        }
        if let Some(count) = runtime.max_host_connections {
            options.max_host_connections = count;
        }
        let bus = &self.bus;
        if let Some(attempts) = bus.max_attempts {
            options.bus.max_attempts = attempts.max(1);
        }
        if let Some(ms) = bus.backoff_base_ms {
            options.bus.backoff_base = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = bus.backoff_max_ms {
            options.bus.backoff_max = std::time::Duration::from_millis(ms);
        }
        let defaults = &mut options.defaults;
        apply(
            defaults,
            Limits {
                deadline_ms: runtime.deadline_ms,
                max_memory: runtime.max_memory,
                max_concurrency: runtime.max_concurrency,
                max_parallel: runtime.max_parallel,
                max_log_lines: runtime.max_log_lines,
                max_log_bytes: runtime.max_log_bytes,
                breaker: runtime.breaker,
                max_keyspace_bytes: runtime.max_keyspace_bytes,
                max_write_set_bytes: runtime.max_write_set_bytes,
                max_component_memory: runtime.max_component_memory,
                max_outbound_connections: runtime.max_outbound_connections,
                idempotency_ttl_s: runtime.idempotency_ttl_s,
            },
        );
        for (name, component) in &self.components {
            let mut settings = options.defaults.clone();
            apply(
                &mut settings,
                Limits {
                    deadline_ms: component.deadline_ms,
                    max_memory: component.max_memory,
                    max_concurrency: component.max_concurrency,
                    max_parallel: component.max_parallel,
                    max_log_lines: component.max_log_lines,
                    max_log_bytes: component.max_log_bytes,
                    breaker: component.breaker,
                    max_keyspace_bytes: component.max_keyspace_bytes,
                    max_write_set_bytes: component.max_write_set_bytes,
                    max_component_memory: component.max_component_memory,
                    max_outbound_connections: component.max_outbound_connections,
                    idempotency_ttl_s: component.idempotency_ttl_s,
                },
            );
            if let Some(hosts) = &component.allowed_outbound_hosts {
                settings.allowed_outbound_hosts = hosts.as_slice().into();
            }
            settings.reuse = component.reuse.map(|reuse| ReusePolicy {
                max_requests: reuse.max_requests.map_or(DEFAULT_REUSE_REQUESTS, NonZeroU32::get),
                max_memory: reuse.max_memory.unwrap_or(settings.max_memory / 2),
            });
            options.components.insert(name.clone(), settings);
        }
        // The pool reserves room for the largest memory any component may use.
        options.engine.max_memory_bytes = options
            .components
            .values()
            .map(|s| s.max_memory)
            .chain([options.defaults.max_memory])
            .max()
            .unwrap_or(options.defaults.max_memory);
        options
    }
}

/// The limits a `[runtime]` or `[components.NAME]` section may set.
struct Limits {
    deadline_ms: Option<u64>,
    max_memory: Option<usize>,
    max_concurrency: Option<u32>,
    max_parallel: Option<NonZeroU32>,
    max_log_lines: Option<u64>,
    max_log_bytes: Option<u64>,
    breaker: Option<BreakerConfig>,
    max_keyspace_bytes: Option<u64>,
    max_write_set_bytes: Option<u64>,
    max_component_memory: Option<u64>,
    max_outbound_connections: Option<usize>,
    idempotency_ttl_s: Option<u64>,
}

fn apply(settings: &mut ComponentSettings, limits: Limits) {
    if let Some(ms) = limits.deadline_ms {
        settings.deadline = std::time::Duration::from_millis(ms);
    }
    if let Some(bytes) = limits.max_memory {
        settings.max_memory = bytes;
    }
    if let Some(count) = limits.max_concurrency {
        settings.max_concurrency = count;
    }
    if let Some(count) = limits.max_parallel {
        settings.max_parallel = Some(count.get());
    }
    if let Some(lines) = limits.max_log_lines {
        settings.output.max_lines = lines;
    }
    if let Some(bytes) = limits.max_log_bytes {
        settings.output.max_bytes = bytes;
    }
    if let Some(breaker) = limits.breaker {
        settings.breaker = breaker;
    }
    if let Some(bytes) = limits.max_keyspace_bytes {
        settings.max_keyspace_bytes = bytes;
    }
    if let Some(bytes) = limits.max_write_set_bytes {
        settings.max_write_set_bytes = bytes;
    }
    if let Some(bytes) = limits.max_component_memory {
        settings.max_component_memory = Some(bytes);
    }
    if let Some(count) = limits.max_outbound_connections {
        settings.max_outbound_connections = count;
    }
    if let Some(seconds) = limits.idempotency_ttl_s {
        settings.idempotency_ttl = std::time::Duration::from_secs(seconds);
    }
}
