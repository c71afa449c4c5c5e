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

use wasmtime::component::{HasData, Linker};

use crate::bindings::keyvalue::Host as _;

use crate::bindings::keyvalue::Error as PlatformError;
use crate::capabilities::keyvalue::KeyvalueCtx;

mod draft;
mod draft2;

/// The bucket handle: there is one bucket, so it carries nothing.
pub struct Bucket;

/// A draft2 `cas` handle: its state lives in [`CasTable`].
pub struct Cas;

/// Per-invocation state the interfaces need besides the keyspace: the
/// draft2 `cas` handles alive.
#[derive(Default)]
pub struct CasTable {
    slots: Vec<Option<CasEntry>>,
}

/// What a `cas` handle saw: the key, and its value when the handle was made
/// (or when a failed swap handed it back).
struct CasEntry {
    key: String,
    seen: Option<Vec<u8>>,
}

/// Most `cas` handles one invocation may hold at once: each keeps a value
/// (up to 1 MiB) in host memory.
pub const MAX_CAS_HANDLES: usize = 256;

impl CasTable {
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
        Ok(index as u32)
    }

    fn get(&self, rep: u32) -> wasmtime::Result<&CasEntry> {
        self.slots
            .get(rep as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| wasmtime::format_err!("unknown cas handle {rep}"))
    }

    fn take(&mut self, rep: u32) -> wasmtime::Result<CasEntry> {
        self.slots
            .get_mut(rep as usize)
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
    async fn get_all(
        &mut self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, PlatformError> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.kv.get(key.clone()).await?;
            found.push((key, value));
        }
        Ok(found)
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
