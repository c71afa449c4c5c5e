//! The one wasmtime [`Engine`] of a host, and the ticker that drives its deadlines.
//!
//! Async support needs no switch since wasmtime 48: `*_async` calls work on any engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. Deadlines are counted in these ticks, so this
/// is their resolution; a tick costs one atomic increment.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Instance slots whose memory is returned to the kernel in one batch.
const DECOMMIT_BATCH: usize = 2;
/// Dirty bytes of a linear memory reset in place (found with the
/// `PAGEMAP_SCAN` ioctl, zeroed with memset) rather than decommitted, when
/// the kernel has that ioctl (Linux 6.7+).
const MEMORY_KEEP_RESIDENT: usize = 1 << 20;
/// The same for tables.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// Bytes at the top of each async stack kept resident between uses.
const STACK_KEEP_RESIDENT: usize = 64 << 10;

/// Sizes of the pooling allocator and per-instance limits.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    /// Component instances alive at once across the host (in-flight requests,
    /// nested calls included). Beyond it, instantiation fails fast.
    pub max_instances: u32,
    /// Largest linear memory any instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Stop looping guests at their deadline. Only benchmarks turn it off,
    /// to measure what it costs: without it a guest that never yields is
    /// never stopped.
    pub epoch_interruption: bool,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits { max_instances: 1000, max_memory_bytes: 64 << 20, epoch_interruption: true }
    }
}

/// Build the engine: component model, async, epoch interruption, pooling.
pub fn build_engine(limits: &EngineLimits) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(limits.max_instances)
        // A component built by cargo-component carries the preview1 adapter:
        // a few core instances and two memories per component instance.
        .total_core_instances(limits.max_instances * 4)
        .total_memories(limits.max_instances * 2)
        .total_tables(limits.max_instances * 4)
        .total_stacks(limits.max_instances)
        .max_memory_size(limits.max_memory_bytes)
        // Returning a slot's pages to the kernel (madvise) on a
        // multi-threaded process makes the kernel flush the TLB of every
        // core by IPI: a profile of GET /hello under load spent about half
        // its CPU there. Two things keep that off the common path:
        // - With `PAGEMAP_SCAN`, the pages an instance dirtied, up to
        //   MEMORY_KEEP_RESIDENT, are zeroed in place and stay resident: a
        //   small service never madvises.
        // - What lies beyond (a guest that used 60 MB) is decommitted in
        //   batches of DECOMMIT_BATCH slots. Batches of 64 made hello fast
        //   before the ioctl was used, but held up to 64 slots' memory per
        //   queue shard (one per CPU): 100 requests touching 60 MB each took
        //   host RSS from 42 MiB to 2.1 GiB. Now at most
        //   shards x (DECOMMIT_BATCH - 1) x max_memory wait to be returned
        //   (128 MiB on 2 CPUs with 64 MiB memories), and hello is faster
        //   than with batches of 64: 12.8k vs 10.3k req/s (BENCHMARKS.md).
        // A slot is always reset before it is handed out again, so isolation
        // between instances is unchanged.
        .decommit_batch_size(DECOMMIT_BATCH)
        .async_stack_keep_resident(STACK_KEEP_RESIDENT);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        // Without the ioctl, keeping memory resident would memset all of
        // it on every reuse, dirty or not: worse than the madvise.
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
    }

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // Components from toolchains that use the async ABI's built-ins
        // (`task.cancel`, ... from componentize-qjs, for one) validate and
        // run; a component that uses none pays nothing for it.
        .wasm_component_model_async(true)
        .epoch_interruption(limits.epoch_interruption)
        // Copy each instance's data segments in rather than map the module's
        // memory image copy-on-write. With CoW, the first write to every
        // image page is a write-protect fault, and on a multi-threaded
        // process each such fault flushes the other cores' TLBs by IPI: the
        // largest cost left in a GET /hello profile. Copying the few KiB of
        // data a service has is cheaper: hello ~20k -> ~35k req/s on 2 cores
        // (BENCHMARKS.md). A component with megabytes of data segments
        // would want CoW back.
        .memory_init_cow(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
///
/// A plain thread, not a tokio task: guests run on the runtime's worker
/// threads, and a worker busy with a looping guest must not be the thing that
/// would have interrupted it.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Start ticking `engine`.
    pub fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("pitstop-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
