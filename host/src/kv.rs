//! The `keyvalue` capability: a component's own keyspace, one sled tree.
//!
//! The context holds only the component's [`sled::Tree`], never the `Db`, so
//! there is no name a guest could pass to reach another keyspace.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::keyvalue::{self, Error, KeyPage};
use crate::state::ComponentState;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys one `list-keys` call returns, whatever the guest asks for.
pub const MAX_PAGE: u32 = 1000;

/// How many bytes (keys plus values) a keyspace holds, against its quota.
///
/// Counted once by scanning the tree when the component is first loaded in
/// this process, then kept up to date by every write. Concurrent writers
/// check against the same counter, so the quota can be overshot by at most
/// the writes in flight at once, never by more.
pub struct Usage {
    bytes: AtomicU64,
    limit: u64,
}

impl Usage {
    /// The usage of `tree`, limited to `limit` bytes.
    pub fn scan(tree: &sled::Tree, limit: u64) -> Self {
        let bytes =
            tree.iter().filter_map(Result::ok).map(|(k, v)| (k.len() + v.len()) as u64).sum();
        Usage { bytes: AtomicU64::new(bytes), limit }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether replacing `old` bytes by `new` bytes fits.
    fn check(&self, old: u64, new: u64) -> Result<(), Error> {
        let projected = self.bytes().saturating_sub(old) + new;
        if new > old && projected > self.limit {
            return Err(Error::QuotaExceeded(format!(
                "the keyspace would hold {projected} bytes, its quota is {}",
                self.limit
            )));
        }
        Ok(())
    }

    fn record(&self, old: u64, new: u64) {
        if new >= old {
            self.bytes.fetch_add(new - old, Ordering::Relaxed);
        } else {
            let _ = self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(old - new))
            });
        }
    }
}

/// Per-invocation state of the capability.
pub struct KeyvalueCtx {
    tree: sled::Tree,
    usage: Arc<Usage>,
    wrote: bool,
}

/// Bytes an entry takes against the quota.
fn entry_size(key: &str, value: Option<&[u8]>) -> u64 {
    value.map_or(0, |v| (key.len() + v.len()) as u64)
}

impl KeyvalueCtx {
    /// A context over one component's tree and its usage.
    pub fn new(tree: sled::Tree, usage: Arc<Usage>) -> Self {
        KeyvalueCtx { tree, usage, wrote: false }
    }

    /// Write `new` (or delete, for `None`) under `key` if the value now is
    /// `expected` (`Some(None)`: absent; `None`: whatever it is). Returns
    /// whether it was written, keeping the quota's count.
    fn write(
        &mut self,
        key: &str,
        expected: Option<Option<&[u8]>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, Error> {
        let current = self.tree.get(key).map_err(storage)?;
        let old = entry_size(key, current.as_deref());
        let new_size = entry_size(key, new.as_deref());
        self.usage.check(old, new_size)?;
        let written = match expected {
            None => {
                match &new {
                    Some(value) => self.tree.insert(key, value.as_slice()),
                    None => self.tree.remove(key),
                }
                .map_err(storage)?;
                true
            }
            Some(expected) => {
                self.tree.compare_and_swap(key, expected, new.as_deref()).map_err(storage)?.is_ok()
            }
        };
        if written {
            self.usage.record(old, new_size);
            self.wrote = true;
        }
        Ok(written)
    }

    /// Whether this invocation changed anything, so the host knows to flush
    /// before it answers.
    pub fn wrote(&self) -> bool {
        self.wrote
    }
}

/// Add the capability to `linker`.
pub fn add_to_linker(linker: &mut Linker<ComponentState>) -> wasmtime::Result<()> {
    keyvalue::add_to_linker::<_, HasSelf<KeyvalueCtx>>(linker, |state| &mut state.kv)
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

fn storage(error: sled::Error) -> Error {
    tracing::error!(%error, "keyvalue storage failed");
    Error::Storage(error.to_string())
}

fn parse_counter(bytes: &[u8]) -> Result<i64, Error> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::InvalidKey("the value is not a decimal integer".into()))
}

impl keyvalue::Host for KeyvalueCtx {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        check_key(&key)?;
        Ok(self.tree.get(key).map_err(storage)?.map(|v| v.to_vec()))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Error> {
        check_key(&key)?;
        check_value(&value)?;
        self.write(&key, None, Some(value))?;
        Ok(())
    }

    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        check_key(&key)?;
        let existed = self.tree.contains_key(&key).map_err(storage)?;
        if existed {
            self.write(&key, None, None)?;
        }
        Ok(existed)
    }

    async fn exists(&mut self, key: String) -> Result<bool, Error> {
        check_key(&key)?;
        self.tree.contains_key(key).map_err(storage)
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, Error> {
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let start = match &cursor {
            // A cursor outside the prefix would list someone else's range of
            // this keyspace; start at the prefix instead.
            Some(c) if c.starts_with(&prefix) => Bound::Excluded(c.as_bytes().to_vec()),
            _ => Bound::Included(prefix.as_bytes().to_vec()),
        };
        let mut keys = Vec::with_capacity(limit.min(64));
        let mut more = false;
        for entry in self.tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (key, _) = entry.map_err(storage)?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
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

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        check_key(&key)?;
        // Optimistic loop: concurrent increments of one key each retry until
        // their compare-and-swap lands, so none is lost.
        loop {
            let current = self.tree.get(&key).map_err(storage)?;
            let value = match &current {
                Some(bytes) => parse_counter(bytes)?,
                None => 0,
            };
            let next = value
                .checked_add(delta)
                .ok_or_else(|| Error::QuotaExceeded("the counter would overflow".into()))?;
            if self.write(&key, Some(current.as_deref()), Some(next.to_string().into_bytes()))? {
                return Ok(next);
            }
        }
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, Error> {
        check_key(&key)?;
        if let Some(value) = &new {
            check_value(value)?;
        }
        self.write(&key, Some(expected.as_deref()), new)
    }
}
