//! The `keyvalue` capability: a component's own keyspace.
//!
//! The context holds only the component's [`Keyspace`], never the store of
//! them all, so there is no name a guest could pass to reach another
//! keyspace. Writes are
//! buffered per invocation and committed all at once by [`crate::runtime::commit`].

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use wasmtime::component::{HasSelf, Linker};

mod usage;
mod writes;

pub use usage::Usage;
pub use writes::{PendingWrite, Writes, entry_size};

use crate::bindings::keyvalue::{self, Error, KeyPage};
use crate::metrics::ComponentMetrics;
use crate::storage::reserved::is_reserved_key;
use crate::storage::{Keyspace, StorageError};

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
    /// Most bytes the write set of one invocation may reach.
    max_write_set: u64,
    metrics: Arc<ComponentMetrics>,
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
    /// A context over one component's keyspace and its usage, buffering at
    /// most `max_write_set` bytes of writes, counting into `metrics`.
    pub fn new(
        keyspace: Arc<dyn Keyspace>,
        usage: Arc<Usage>,
        max_write_set: u64,
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
            max_write_set,
            metrics,
        }
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
        if write_set > self.write_set && write_set > self.max_write_set {
            return Err(Error::QuotaExceeded(format!(
                "this invocation would write {write_set} bytes; one invocation may write at most \
                 {} (max_write_set_bytes)",
                self.max_write_set
            )));
        }
        if new_bytes > new_before
            && let Some(why) = self.usage.refuse(&*self.keyspace, old_bytes, new_bytes)
        {
            return Err(Error::QuotaExceeded(why));
        }
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

impl keyvalue::Host for KeyvalueCtx {
    #[tracing::instrument(level = "debug", name = "keyvalue.get", skip_all)]
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.metrics.kv_get.inc();
        check_key(&key)?;
        let value = self.read(&key)?;
        let read = key.len() + value.as_ref().map_or(0, Vec::len);
        self.metrics.kv_bytes_read.inc_by(read as u64);
        Ok(value)
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.set", skip_all)]
    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.metrics.kv_set.inc();
        check_key(&key)?;
        check_value(&value)?;
        self.metrics.kv_bytes_written.inc_by((key.len() + value.len()) as u64);
        self.buffer(&key, PendingWrite::Put(value))
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.delete", skip_all)]
    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        self.metrics.kv_delete.inc();
        check_key(&key)?;
        let existed = self.read(&key)?.is_some();
        if existed {
            self.buffer(&key, PendingWrite::Delete)?;
        }
        Ok(existed)
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.exists", skip_all)]
    async fn exists(&mut self, key: String) -> Result<bool, Error> {
        self.metrics.kv_get.inc();
        check_key(&key)?;
        Ok(self.read(&key)?.is_some())
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.list-keys", skip_all)]
    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, Error> {
        self.metrics.kv_list.inc();
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let start = match &cursor {
            // A cursor outside the prefix would list someone else's range of
            // this keyspace; start at the prefix instead.
            Some(c) if c.starts_with(&prefix) => Bound::Excluded(c.clone()),
            _ => Bound::Included(prefix.clone()),
        };
        let mut committed = self
            .committed_state()?
            .range_from(start.as_ref().map(|k| k.as_bytes()))
            .map(|entry| entry.map(|(key, _)| key))
            // The platform's own keys (the outbox) sort after every UTF-8 key.
            .take_while(|entry| {
                entry
                    .as_ref()
                    .map_or(true, |k| k.starts_with(prefix.as_bytes()) && !is_reserved_key(k))
            })
            .peekable();
        let mut own = self
            .writes
            .pending
            .range::<String, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .peekable();
        // Merge the committed keys with this invocation's writes, in byte
        // order; where both have a key, the invocation's write decides.
        let mut keys = Vec::with_capacity(limit.min(64));
        let mut more = false;
        loop {
            let next_committed = match committed.peek() {
                Some(Ok(k)) => Some(k.to_vec()),
                Some(Err(_)) => return Err(self.failed(committed.next().unwrap().unwrap_err())),
                None => None,
            };
            let next_own = own.peek().map(|(k, w)| (k.as_bytes().to_vec(), (*w).clone()));
            let (key, present) = match (next_committed, next_own) {
                (None, None) => break,
                (Some(c), None) => {
                    committed.next();
                    (c, true)
                }
                (Some(c), Some((o, write))) if o <= c => {
                    own.next();
                    if o == c {
                        committed.next();
                    }
                    (o, !matches!(write, PendingWrite::Delete))
                }
                (Some(c), Some(_)) => {
                    committed.next();
                    (c, true)
                }
                (None, Some((o, write))) => {
                    own.next();
                    (o, !matches!(write, PendingWrite::Delete))
                }
            };
            if !present {
                continue;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(String::from_utf8_lossy(&key).into_owned());
        }
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.increment", skip_all)]
    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        self.metrics.kv_add.inc();
        check_key(&key)?;
        match self.writes.pending.get(&key) {
            // The invocation set or deleted the key itself: count from that.
            Some(PendingWrite::Put(_) | PendingWrite::Delete) => {
                let next = add(counter(self.read(&key)?.as_deref())?, delta)?;
                self.buffer(&key, PendingWrite::Put(next.to_string().into_bytes()))?;
                Ok(next)
            }
            // Otherwise keep a delta, applied to whatever value is committed
            // when this invocation commits.
            Some(PendingWrite::Add(earlier)) => {
                let total = add(*earlier, delta)?;
                let next = add(counter(self.committed(&key)?.as_deref())?, total)?;
                self.buffer_counter(&key, total, next)?;
                Ok(next)
            }
            None => {
                let next = add(counter(self.committed(&key)?.as_deref())?, delta)?;
                self.buffer_counter(&key, delta, next)?;
                Ok(next)
            }
        }
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.compare-and-swap", skip_all)]
    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, Error> {
        self.metrics.kv_set.inc();
        check_key(&key)?;
        if let Some(value) = &new {
            check_value(value)?;
        }
        if self.read(&key)? != expected {
            return Ok(false);
        }
        match self.writes.pending.get(&key) {
            // The swap depends on the committed value: the commit checks it
            // is still the same, so of two concurrent swaps only one lands.
            None => {
                self.writes.expectations.entry(key.clone()).or_insert(expected);
            }
            Some(PendingWrite::Add(_)) => {
                let base = self.committed(&key)?;
                self.writes.expectations.entry(key.clone()).or_insert(base);
            }
            Some(PendingWrite::Put(_) | PendingWrite::Delete) => {}
        }
        let write = match new {
            Some(value) => PendingWrite::Put(value),
            None => PendingWrite::Delete,
        };
        self.buffer(&key, write)?;
        Ok(true)
    }
}
