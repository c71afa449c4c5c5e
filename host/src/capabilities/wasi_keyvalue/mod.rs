//! `wasi:keyvalue` (`0.2.0-draft` and Spin's `0.2.0-draft2`, side by side)
//! over the component's own keyspace, for components written against the
//! standard rather than `pitstop:platform/keyvalue`.
//!
//! Every operation goes through the same [`KeyvalueCtx`] as the platform's
//! own capability: the same limits, quota and metrics, and the same
//! invocation-wide write set, so its writes commit with the invocation or
//! vanish with it, and a component may mix both interfaces.
//!
//! Buckets: `open("")` and `open("default")` give the component's keyspace;
//! any other name is `no-such-store` (there is no way to name another
//! component's keyspace, here as in the platform's interface).
//!
//! A batch that fails part-way (a key over the limits, the write set full)
//! leaves the writes before the failure in the invocation's write set: like
//! any write, they commit only if the invocation succeeds.

use std::sync::atomic::{AtomicU32, Ordering};

use wasmtime::component::{HasData, Linker};

use crate::bindings::keyvalue::Host as _;

use crate::bindings::keyvalue::Error as PlatformError;
use crate::capabilities::keyvalue::KeyvalueCtx;
use crate::resilience::memory::Charge;

mod draft;
mod draft2;

/// The bucket handle: there is one bucket, so it carries nothing.
pub struct Bucket;

/// A draft2 `cas` handle: its state lives in [`CasTable`].
pub struct Cas;

/// Per-invocation state the interfaces need besides the keyspace: the
/// draft2 `cas` handles alive.
pub struct CasTable {
    slots: Vec<Option<CasEntry>>,
    /// Part of every handle this table gives out, different in each
    /// invocation: a handle a reused instance kept from an earlier
    /// invocation names nothing here, even where its slot is taken again.
    generation: u32,
}

/// What a `cas` handle saw: the key, and its value when the handle was made
/// (or when a failed swap handed it back), charged to the component's host
/// memory while the handle lives.
struct CasEntry {
    key: String,
    seen: Option<Vec<u8>>,
    _charge: Charge,
}

/// Most `cas` handles one invocation may hold at once: each keeps a value
/// (up to 1 MiB) in host memory.
pub const MAX_CAS_HANDLES: usize = 256;

/// Bits of a handle that index the table (256 slots); the rest is the
/// table's generation.
const SLOT_BITS: u32 = 8;

impl Default for CasTable {
    fn default() -> Self {
        CasTable::new()
    }
}

impl CasTable {
    /// An empty table with a generation of its own.
    pub fn new() -> Self {
        static GENERATIONS: AtomicU32 = AtomicU32::new(0);
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed) & (u32::MAX >> SLOT_BITS);
        CasTable { slots: Vec::new(), generation }
    }

    /// The slot a handle names, if it is one of this table's.
    fn slot(&self, rep: u32) -> Option<usize> {
        (rep >> SLOT_BITS == self.generation).then_some((rep & ((1 << SLOT_BITS) - 1)) as usize)
    }

    fn insert(&mut self, entry: CasEntry) -> Result<u32, String> {
        let free = self.slots.iter().position(Option::is_none);
        let index = match free {
            Some(index) => index,
            None if self.slots.len() < MAX_CAS_HANDLES => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(format!("more than {MAX_CAS_HANDLES} cas handles at once")),
        };
        self.slots[index] = Some(entry);
        Ok(self.generation << SLOT_BITS | index as u32)
    }

    fn get(&self, rep: u32) -> wasmtime::Result<&CasEntry> {
        self.slot(rep)
            .and_then(|slot| self.slots.get(slot))
            .and_then(Option::as_ref)
            .ok_or_else(|| wasmtime::format_err!("unknown cas handle {rep}"))
    }

    fn take(&mut self, rep: u32) -> wasmtime::Result<CasEntry> {
        self.slot(rep)
            .and_then(|slot| self.slots.get_mut(slot))
            .and_then(Option::take)
            .ok_or_else(|| wasmtime::format_err!("unknown cas handle {rep}"))
    }
}

/// What the interfaces work on: the invocation's keyspace context and its
/// `cas` handles.
pub struct WasiKeyvalue<'a> {
    /// The component's keyspace, as the platform's own interface sees it.
    pub kv: &'a mut KeyvalueCtx,
    /// The draft2 `cas` handles.
    pub cas: &'a mut CasTable,
}

struct HasWasiKeyvalue;

impl HasData for HasWasiKeyvalue {
    type Data<'a> = WasiKeyvalue<'a>;
}

/// The bucket names that open the component's keyspace.
fn is_default_bucket(identifier: &str) -> bool {
    identifier.is_empty() || identifier == "default"
}

/// A platform error as the text of the standard's `other`.
fn describe(error: PlatformError) -> String {
    match error {
        PlatformError::InvalidKey(why) => format!("invalid key: {why}"),
        PlatformError::QuotaExceeded(why) => format!("quota exceeded: {why}"),
        PlatformError::Storage(why) => format!("storage: {why}"),
    }
}

impl WasiKeyvalue<'_> {
    /// `get-many` as both versions need it: every key asked, with its value.
    /// What it returns is charged to the component's host memory as it is
    /// read, and may not pass what the guest's memory could take: a guest
    /// asking for one large value many times is refused before the host
    /// holds more than that.
    async fn get_all(
        &mut self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, PlatformError> {
        let mut charge = self.kv.charge("get-many", 0)?;
        let mut found = Vec::with_capacity(keys.len().min(1024));
        for key in keys {
            let value = self.kv.get(key.clone()).await?;
            let bytes = (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
            let total = charge.bytes() + bytes;
            if total > self.kv.max_result() {
                return Err(PlatformError::QuotaExceeded(format!(
                    "get-many would return more than {} bytes, the component's max_memory; ask \
                     for fewer keys at once",
                    self.kv.max_result()
                )));
            }
            charge
                .grow("get-many", bytes)
                .map_err(|e| PlatformError::QuotaExceeded(e.to_string()))?;
            found.push((key, value));
        }
        Ok(found)
    }

    /// A `cas` handle on `key`, which holds `seen`: charged to the
    /// component's host memory while it lives.
    fn new_cas(&mut self, key: String, seen: Option<Vec<u8>>) -> Result<u32, PlatformError> {
        let bytes = (key.len() + seen.as_ref().map_or(0, Vec::len)) as u64;
        let charge = self.kv.charge("a cas handle", bytes)?;
        self.cas
            .insert(CasEntry { key, seen, _charge: charge })
            .map_err(PlatformError::QuotaExceeded)
    }

    /// `set-many`, key by key (see the module doc on a failure part-way).
    async fn set_all(&mut self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), PlatformError> {
        for (key, value) in pairs {
            self.kv.set(key, value).await?;
        }
        Ok(())
    }

    /// `delete-many`, key by key.
    async fn delete_all(&mut self, keys: Vec<String>) -> Result<(), PlatformError> {
        for key in keys {
            self.kv.delete(key).await?;
        }
        Ok(())
    }
}

/// Add both versions of `wasi:keyvalue` to `linker`; `get` finds the
/// invocation's keyspace context and `cas` handles in the store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> WasiKeyvalue<'_>,
) -> wasmtime::Result<()> {
    draft::Imports::add_to_linker::<T, HasWasiKeyvalue>(linker, get)?;
    draft2::Imports::add_to_linker::<T, HasWasiKeyvalue>(linker, get)?;
    Ok(())
}
