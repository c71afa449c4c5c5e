//! The wasmtime engines of a host, and the ticker that drives their deadlines.
//!
//! There are two, differing only in how an instance's linear memory gets
//! the component's data segments ([`MemoryInit`]): copied in, or mapped
//! copy-on-write from an image. Each component is compiled for the one that
//! suits the size of its data ([`MemoryInit::for_component`]), and keeps
//! it: a compiled component runs only in stores of its own engine.
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
    /// Component instances alive at once in each of the two engines
    /// (in-flight requests, nested calls included). Beyond it,
    /// instantiation fails fast.
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

/// How an instance's memory receives the component's data segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryInit {
    /// Copied into each fresh instance. With copy-on-write, the first write
    /// to each image page is a write-protect fault, and on a multi-threaded
    /// process each such fault flushes the other cores' TLBs by IPI: the
    /// largest cost left in a GET /hello profile. Copying the few KiB of
    /// data a service has is cheaper: hello ~20k -> ~35k req/s on 2 cores,
    /// and 15.4k vs 11.4k in one run of this host (BENCHMARKS.md).
    Copy,
    /// Mapped copy-on-write from the compiled component's memory image, so
    /// an instance pays only for the pages it writes. For an interpreter
    /// with megabytes of pre-initialised heap (componentize-py's CPython:
    /// 18 MB component) copying them all per request cost most of the
    /// request: Python hello 133 -> 698 req/s with the image (BENCHMARKS.md).
    Image,
}

/// Bytes of data segments from which a component's memory is mapped from
/// an image rather than copied ([`MemoryInit::Image`]). Rust services have
/// a few KiB; interpreters built by componentize-py or componentize-js
/// carry megabytes.
pub const IMAGE_FROM_DATA_BYTES: u64 = 1 << 20;

impl MemoryInit {
    /// Both, in the order a cache lookup tries them.
    pub const ALL: [MemoryInit; 2] = [MemoryInit::Copy, MemoryInit::Image];

    /// The choice for the component `bytes`: by the size of the data
    /// segments of its core modules. Bytes that do not parse get `Copy`
    /// (compiling them will say what is wrong).
    pub fn for_component(bytes: &[u8]) -> MemoryInit {
        match data_segment_bytes(bytes) {
            Some(data) if data >= IMAGE_FROM_DATA_BYTES => MemoryInit::Image,
            _ => MemoryInit::Copy,
        }
    }

    /// The name in cache entries and logs.
    pub fn name(self) -> &'static str {
        match self {
            MemoryInit::Copy => "copy",
            MemoryInit::Image => "image",
        }
    }
}

/// The bytes of every data segment in `bytes`' core modules, nested ones
/// included; `None` when the bytes do not parse.
fn data_segment_bytes(bytes: &[u8]) -> Option<u64> {
    let mut total = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let wasmparser::Payload::DataSection(reader) = payload.ok()? {
            for data in reader {
                total += data.ok()?.data.len() as u64;
            }
        }
    }
    Some(total)
}

/// The host's engines, one per [`MemoryInit`].
#[derive(Clone)]
pub struct Engines {
    copy: Engine,
    image: Engine,
}

impl Engines {
    /// Both engines, with the same limits each.
    pub fn build(limits: &EngineLimits) -> wasmtime::Result<Self> {
        Ok(Engines {
            copy: build_engine(limits, MemoryInit::Copy)?,
            image: build_engine(limits, MemoryInit::Image)?,
        })
    }

    /// The engine for components whose memory starts as `init` says.
    pub fn get(&self, init: MemoryInit) -> &Engine {
        match init {
            MemoryInit::Copy => &self.copy,
            MemoryInit::Image => &self.image,
        }
    }

    /// The engine to compile the component `bytes` for.
    pub fn for_component(&self, bytes: &[u8]) -> &Engine {
        self.get(MemoryInit::for_component(bytes))
    }

    /// Which of the two `engine` is.
    pub fn init_of(&self, engine: &Engine) -> MemoryInit {
        match Engine::same(engine, &self.image) {
            true => MemoryInit::Image,
            false => MemoryInit::Copy,
        }
    }
}

/// Build an engine: component model, async, epoch interruption, pooling,
/// and data segments initialised as `init` says.
fn build_engine(limits: &EngineLimits, init: MemoryInit) -> wasmtime::Result<Engine> {
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
        .memory_init_cow(init == MemoryInit::Image)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Advances the engines' epoch every [`EPOCH_TICK`] until dropped.
///
/// A plain thread, not a tokio task: guests run on the runtime's worker
/// threads, and a worker busy with a looping guest must not be the thing that
/// would have interrupted it.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Start ticking `engines`.
    pub fn start(engines: Engines) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("pitstop-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engines.copy.increment_epoch();
                    engines.image.increment_epoch();
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{ConstExpr, DataSection, MemorySection, MemoryType, Module, ModuleSection};

    /// A component with one core module holding `bytes` of data.
    fn component_with_data(bytes: usize) -> Vec<u8> {
        let mut module = Module::new();
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 64,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
        let mut data = DataSection::new();
        data.active(0, &ConstExpr::i32_const(0), vec![7u8; bytes]);
        module.section(&data);
        let mut component = wasm_encoder::Component::new();
        component.section(&ModuleSection(&module));
        component.finish()
    }

    #[test]
    fn megabytes_of_data_are_mapped_and_kilobytes_copied() {
        let big = component_with_data(IMAGE_FROM_DATA_BYTES as usize);
        let small = component_with_data(4096);
        assert_eq!(MemoryInit::for_component(&big), MemoryInit::Image);
        assert_eq!(MemoryInit::for_component(&small), MemoryInit::Copy);
        assert_eq!(MemoryInit::for_component(b"garbage"), MemoryInit::Copy);

        let limits = EngineLimits { max_instances: 4, ..EngineLimits::default() };
        let engines = Engines::build(&limits).unwrap();
        for (bytes, init) in [(big, MemoryInit::Image), (small, MemoryInit::Copy)] {
            let engine = engines.for_component(&bytes);
            assert_eq!(engines.init_of(engine), init);
            wasmtime::component::Component::new(engine, &bytes).expect("compiles");
        }
    }
}
