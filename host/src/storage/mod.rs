//! The seam under every component's keyspace, and its embedded backend.
//!
//! The `keyvalue` capability, the commit and the event queue see a
//! keyspace only as a [`Keyspace`]: ordered bytes to bytes, read one key or
//! a range, written by atomic batches. The runtime opens keyspaces through a
//! [`KeyspaceStore`]. The embedded default, [`embedded::SledStore`], keeps
//! each keyspace in a sled tree of the platform's database; a distributed
//! store is a second implementation of these two traits, and neither the
//! capabilities nor the gateway change for it.

pub mod disk;
pub mod embedded;
pub mod flusher;
pub mod jetstream;
pub mod reserved;

use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The keyspace was dropped (a purge) while it was in use.
    #[error("the component's keyspace was purged while this request ran")]
    Purged,
    /// The backend cannot be reached now (a cluster's server is down or
    /// did not answer in time): the same call may work later.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// Other writers kept committing first, every time this one tried.
    #[error("the keyspace was too busy to commit; retry")]
    Busy,
    /// The disk is too full to write ([`disk`]): reads still work.
    #[error("{0}")]
    NoSpace(String),
    /// The backend failed.
    #[error("storage failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Entries in key order, as a range read yields them.
pub type Entries<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + 'a>;

/// Writes applied together: all of them or none.
#[derive(Debug, Default)]
pub struct Batch {
    /// Per key, the value to store, or `None` to remove it.
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Store `value` at `key`.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.push((key.into(), Some(value.into())));
    }

    /// Remove `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.push((key.into(), None));
    }
}

/// One component's keyspace: its own ordered map from bytes to bytes.
///
/// Holding one gives no way to reach another component's keyspace, which is
/// what makes the `keyvalue` capability safe to hand to a guest.
pub trait Keyspace: Send + Sync + 'static {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Every entry from `start` on, in key order.
    fn range_from(&self, start: Bound<&[u8]>) -> Entries<'_>;

    /// Apply every write of `batch`, atomically.
    fn apply(&self, batch: Batch) -> Result<(), StorageError>;

    /// Wait until this copy of the keyspace holds every write acknowledged
    /// before the call, wherever it was made. A reader calls it once before
    /// it starts reading, so a write acknowledged through another host is
    /// read back here (an embedded keyspace has one copy: nothing to wait for).
    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Apply the batch `prepare` builds from what it reads of this keyspace,
    /// with no other writer's batch between those reads and the apply, and
    /// say whether one was applied (`prepare` returns `None` to apply
    /// nothing). The caller serialises its own commits to the keyspace (the
    /// commit lock), which is all an embedded keyspace needs; a keyspace
    /// shared with other hosts runs `prepare` again on the newer state when
    /// another host committed in between, so `prepare` must be free of side
    /// effects beyond its answer.
    fn transact(&self, prepare: &mut dyn FnMut() -> Option<Batch>) -> Result<bool, StorageError> {
        match prepare() {
            Some(batch) => self.apply(batch).map(|()| true),
            None => Ok(false),
        }
    }

    /// Make everything applied so far survive a crash (an embedded keyspace
    /// flushes; a cluster's was stored when its commit was acknowledged).
    fn durable(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// A receiver that changes whenever a commit is applied to this copy,
    /// whichever host made it; `None` where only this host writes (the
    /// embedded store), so there is nothing to watch for.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Bytes of the guest's keys and values (not the platform's reserved
    /// keys), when the keyspace counts them itself: one shared with other
    /// hosts does, since their commits change it too. `None`: the caller's
    /// own count ([`crate::capabilities::keyvalue::Usage`]) is exact.
    fn guest_bytes(&self) -> Option<u64> {
        None
    }

    /// Whether `key` holds a value.
    fn contains(&self, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.get(key)?.is_some())
    }

    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix<'a>(&'a self, prefix: &'a [u8]) -> Entries<'a> {
        Box::new(
            self.range_from(Bound::Included(prefix)).take_while(move |entry| {
                entry.as_ref().map_or(true, |(k, _)| k.starts_with(prefix))
            }),
        )
    }

    /// Store `value` at `key` (one write, atomically).
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        batch.insert(key, value);
        self.apply(batch)
    }

    /// Remove `key` (one write, atomically).
    fn remove(&self, key: &[u8]) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        batch.remove(key);
        self.apply(batch)
    }
}

/// A future of the flush, boxed so [`KeyspaceStore`] stays object safe.
pub type Flushing<'a> = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + 'a>>;

/// Where keyspaces live: opens them by component name.
pub trait KeyspaceStore: Send + Sync + 'static {
    /// `component`'s keyspace, created empty on first use.
    fn open(&self, component: &str) -> Result<Arc<dyn Keyspace>, StorageError>;

    /// The components that have a keyspace.
    fn names(&self) -> Result<Vec<String>, StorageError>;

    /// Drop `component`'s keyspace and everything in it.
    fn purge(&self, component: &str) -> Result<(), StorageError>;

    /// Wait until everything applied before this call survives a crash.
    fn flush(&self) -> Flushing<'_>;

    /// Whether the store accepts a write and reads it back.
    fn check(&self) -> Result<(), StorageError>;
}
