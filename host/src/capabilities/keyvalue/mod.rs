//! The `keyvalue` capability: a component's own keyspace (this file: an
//! invocation's context; `host.rs`: the functions a guest calls).
//!
//! The context holds only the component's [`Keyspace`], never the store of
//! them all, so there is no name a guest could pass to reach another
//! keyspace. Writes are
//! buffered per invocation and committed all at once by [`crate::runtime::commit`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use wasmtime::component::{HasSelf, Linker};

mod counters;
mod host;
mod usage;
mod writes;

pub use usage::Usage;
pub use writes::{PendingWrite, Writes, entry_size};

use crate::bindings::keyvalue::{self, Error};
use crate::capabilities::services::Caller;
use crate::metrics::ComponentMetrics;
use crate::resilience::memory::{Charge, ComponentMemory};
use crate::storage::{Keyspace, StorageError};
use counters::CounterLock;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys one `list-keys` call returns, whatever the guest asks for.
pub const MAX_PAGE: u32 = 1000;

/// Per-invocation state of the capability.
///
/// Writes are buffered here and reach the tree only when the invocation
/// succeeds (see `commit`); reads see the committed state overlaid with this
/// invocation's own writes, so a guest reads what it wrote and nobody else
/// sees anything before the commit.
pub struct KeyvalueCtx {
    keyspace: Arc<dyn Keyspace>,
    /// Whether the keyspace was synced for this invocation (see [`Self::committed_state`]).
    synced: AtomicBool,
    /// Why the store could not be reached, if it could not: the invocation
    /// then answers 503 whatever the guest made of the error.
    unreachable: OnceLock<String>,
    usage: Arc<Usage>,
    writes: Writes,
    /// Per written key: what the pending write will make it hold (bytes
    /// against the quota) and what it costs against the write set.
    footprint: BTreeMap<String, Footprint>,
    /// Sums over `footprint`: what the written keys held (`old_bytes`) and
    /// will hold (`new_bytes`), and the write set (`write_set`).
    old_bytes: u64,
    new_bytes: u64,
    write_set: u64,
    limits: WriteLimits,
    /// The component's host memory, charged for values on their way to the
    /// guest and, in `held`, for the write set.
    memory: Arc<ComponentMemory>,
    held: Charge,
    /// The counter keys it incremented, locked until its commit is done.
    counters: Vec<CounterLock>,
    /// Whose turn at the CPU to give up while waiting for a counter's lock.
    caller: Option<Caller>,
    metrics: Arc<ComponentMetrics>,
}

/// What an invocation's writes hold until their commit is done: the host
/// memory of the write set and the locks of the counters it incremented.
pub struct Held {
    _charge: Charge,
    _counters: Vec<CounterLock>,
}

/// How much one invocation may hold through the capability.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// Most bytes the write set of one invocation may reach.
    pub max_write_set: u64,
    /// Most bytes one call may return (the guest's `max_memory`: more could
    /// never be copied into it).
    pub max_result: u64,
}

/// What one pending write costs against the write set beyond its key and
/// value: its place in the invocation's maps.
const PENDING_WRITE_OVERHEAD: u64 = 64;

/// One key written by an invocation (see [`KeyvalueCtx`]'s `footprint`).
#[derive(Debug, Clone, Copy)]
struct Footprint {
    /// Bytes the key will hold once the pending write commits.
    pending: u64,
    /// What the pending write costs against the write set.
    cost: u64,
}

impl KeyvalueCtx {
    /// A context over one component's keyspace and its usage, within
    /// `limits`, charging what it holds to `memory`, counting into `metrics`.
    pub fn new(
        keyspace: Arc<dyn Keyspace>,
        usage: Arc<Usage>,
        limits: WriteLimits,
        memory: Arc<ComponentMemory>,
        metrics: Arc<ComponentMetrics>,
    ) -> Self {
        KeyvalueCtx {
            keyspace,
            synced: AtomicBool::new(false),
            unreachable: OnceLock::new(),
            usage,
            writes: Writes::default(),
            footprint: BTreeMap::new(),
            old_bytes: 0,
            new_bytes: 0,
            write_set: 0,
            limits,
            held: memory.empty(),
            memory,
            counters: Vec::new(),
            caller: None,
            metrics,
        }
    }

    /// Give `caller`'s turn at the CPU up while waiting for a counter's
    /// lock: the holder may need a turn to finish.
    pub fn waiting_as(mut self, caller: Caller) -> Self {
        self.caller = Some(caller);
        self
    }

    /// The host memory charged for the write set and the counter locks,
    /// leaving none held: the commit holds them until it is done.
    pub fn take_held(&mut self) -> Held {
        Held {
            _charge: std::mem::replace(&mut self.held, self.memory.empty()),
            _counters: std::mem::take(&mut self.counters),
        }
    }

    /// Hold `key`'s counter lock for the rest of the invocation.
    async fn lock_counter(&mut self, key: &str) -> Result<(), Error> {
        if self.counters.iter().any(|held| held.key() == key) {
            return Ok(());
        }
        let locks = self.usage.counters().clone();
        let lock = match &self.caller {
            Some(caller) => caller.while_blocked(locks.lock(key)).await.map_err(|_| {
                Error::Storage("the deadline passed while waiting for the counter".into())
            })?,
            None => locks.lock(key).await,
        };
        self.counters.push(lock);
        Ok(())
    }

    /// `bytes` of host memory for `what`, held until the charge is dropped.
    pub fn charge(&self, what: &'static str, bytes: u64) -> Result<Charge, Error> {
        self.memory.charge(what, bytes).map_err(|refused| Error::QuotaExceeded(refused.to_string()))
    }

    /// Most bytes one call may return to the guest.
    pub fn max_result(&self) -> u64 {
        self.limits.max_result
    }

    /// The buffered writes, leaving none behind.
    pub fn take_writes(&mut self) -> Writes {
        self.footprint.clear();
        (self.old_bytes, self.new_bytes, self.write_set) = (0, 0, 0);
        std::mem::take(&mut self.writes)
    }

    /// The committed keyspace, brought up to date on the invocation's first
    /// read: a keyspace shared by a cluster then holds every write
    /// acknowledged through any host before it (read-your-writes).
    fn committed_state(&self) -> Result<&dyn Keyspace, Error> {
        if !self.synced.load(Ordering::Relaxed) {
            self.keyspace.sync().map_err(|e| self.failed(e))?;
            self.synced.store(true, Ordering::Relaxed);
        }
        Ok(&*self.keyspace)
    }

    fn committed(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.committed_state()?.get(key.as_bytes()).map_err(|e| self.failed(e))
    }

    /// `error` as the guest sees it, noting an unreachable store.
    fn failed(&self, error: StorageError) -> Error {
        if let StorageError::Unavailable(why) = &error {
            let _ = self.unreachable.set(why.clone());
        }
        storage(error)
    }

    /// Why the store was unreachable during this invocation, if it was.
    pub fn unreachable(&self) -> Option<&str> {
        self.unreachable.get().map(String::as_str)
    }

    /// The value as this invocation sees it: its own write, else the committed one.
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self.writes.pending.get(key) {
            Some(PendingWrite::Put(value)) => Ok(Some(value.clone())),
            Some(PendingWrite::Delete) => Ok(None),
            Some(PendingWrite::Add(delta)) => {
                let base = counter(self.committed(key)?.as_deref())?;
                Ok(Some(add(base, *delta)?.to_string().into_bytes()))
            }
            None => self.committed(key),
        }
    }

    /// Buffer `write` under `key`, checking it, together with this
    /// invocation's earlier writes, against the write-set limit and the
    /// keyspace quota: writes held in memory until the commit are bounded
    /// as much as what the commit stores.
    fn buffer(&mut self, key: &str, write: PendingWrite) -> Result<(), Error> {
        // The value's bytes; a counter is at most 20 digits.
        let value = match &write {
            PendingWrite::Put(value) => Some(value.len() as u64),
            PendingWrite::Delete => None,
            PendingWrite::Add(_) => Some(20),
        };
        self.buffer_sized(key, write, value)
    }

    /// Buffer a counter's delta, sized by the value it makes now
    /// (`next`), not by the longest a counter can be: a keyspace near its
    /// quota can still count. The commit checks again with the value the
    /// delta really makes then.
    fn buffer_counter(&mut self, key: &str, total: i64, next: i64) -> Result<(), Error> {
        let digits = next.to_string().len() as u64;
        self.buffer_sized(key, PendingWrite::Add(total), Some(digits))
    }

    /// [`Self::buffer`] with the value's length given (`None`: a delete).
    fn buffer_sized(
        &mut self,
        key: &str,
        write: PendingWrite,
        value: Option<u64>,
    ) -> Result<(), Error> {
        // What the key will hold, against the quota.
        let size = value.map_or(0, |v| key.len() as u64 + v);
        // Every pending write costs memory until the commit, a delete or a
        // zero-byte value too: the write set counts each one's key, value
        // and bookkeeping, not only the bytes it stores.
        let cost = PENDING_WRITE_OVERHEAD + key.len() as u64 + value.unwrap_or(0);
        // A key written for the first time joins the sums as it is committed.
        let (before, joining) = match self.footprint.get(key) {
            Some(known) => (*known, 0),
            None => {
                let old = self.committed(key)?;
                let committed = entry_size(key.as_bytes(), old.as_deref());
                (Footprint { pending: committed, cost: 0 }, committed)
            }
        };
        let old_bytes = self.old_bytes + joining;
        let new_before = self.new_bytes + joining;
        let new_bytes = new_before - before.pending + size;
        let write_set = self.write_set - before.cost + cost;
        if write_set > self.write_set && write_set > self.limits.max_write_set {
            return Err(Error::QuotaExceeded(format!(
                "this invocation would write {write_set} bytes; one invocation may write at most \
                 {} (max_write_set_bytes)",
                self.limits.max_write_set
            )));
        }
        if new_bytes > new_before
            && let Some(why) = self.usage.refuse(&*self.keyspace, old_bytes, new_bytes)
        {
            return Err(Error::QuotaExceeded(why));
        }
        // The write set is held in host memory until the commit.
        let held = self.held.resize("the write set", write_set);
        held.map_err(|refused| Error::QuotaExceeded(refused.to_string()))?;
        self.footprint.insert(key.to_string(), Footprint { pending: size, cost });
        (self.old_bytes, self.new_bytes, self.write_set) = (old_bytes, new_bytes, write_set);
        self.writes.pending.insert(key.to_string(), write);
        Ok(())
    }
}

fn counter(bytes: Option<&[u8]>) -> Result<i64, Error> {
    bytes.map_or(Ok(0), parse_counter)
}

fn add(base: i64, delta: i64) -> Result<i64, Error> {
    base.checked_add(delta).ok_or_else(|| Error::QuotaExceeded("the counter would overflow".into()))
}

/// Add the capability to `linker`.
///
/// Generic over the store's data, as wasmtime's own capability crates are:
/// `get` finds this capability's context in it, so this module need not
/// know the type that holds every context.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut KeyvalueCtx,
) -> wasmtime::Result<()> {
    keyvalue::add_to_linker::<T, HasSelf<KeyvalueCtx>>(linker, get)
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidKey("keys must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidKey(format!(
            "key is {} bytes, the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), Error> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::QuotaExceeded(format!(
            "value is {} bytes, the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

fn storage(error: StorageError) -> Error {
    tracing::error!(%error, "keyvalue storage failed");
    Error::Storage(error.to_string())
}

pub(crate) fn parse_counter(bytes: &[u8]) -> Result<i64, Error> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::InvalidKey("the value is not a decimal integer".into()))
}
