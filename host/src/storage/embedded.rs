//! The embedded default: every keyspace is a tree of the platform's sled
//! database, named [`keyspace_tree`], flushed by one [`Flusher`] thread.

use std::ops::Bound;
use std::sync::Arc;

/// The default size of sled's page cache: sled's own default (1 GiB) would
/// be held beside every limit on what the host holds for guests.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

use super::disk;
use super::flusher::Flusher;
use super::{Batch, Entries, Flushing, Keyspace, KeyspaceStore, StorageError};

/// What every keyspace tree's name starts with.
pub const KEYSPACE_PREFIX: &str = "kv/";

/// The sled tree holding `component`'s keyspace.
pub fn keyspace_tree(component: &str) -> String {
    format!("{KEYSPACE_PREFIX}{component}")
}

impl From<sled::Error> for StorageError {
    fn from(error: sled::Error) -> Self {
        match error {
            // The only trees dropped while in use are purged keyspaces;
            // sled names them by their bytes, which a client should not see.
            sled::Error::CollectionNotFound(_) => StorageError::Purged,
            other => StorageError::Backend(Box::new(other)),
        }
    }
}

/// Keyspaces as trees of one sled database.
pub struct SledStore {
    db: sled::Db,
    flusher: Flusher,
}

impl SledStore {
    /// Keyspaces in `db`; starts the thread that flushes it.
    pub fn new(db: sled::Db) -> std::io::Result<Self> {
        Ok(SledStore { flusher: Flusher::start(db.clone())?, db })
    }
}

impl KeyspaceStore for SledStore {
    fn open(&self, component: &str) -> Result<Arc<dyn Keyspace>, StorageError> {
        Ok(Arc::new(SledKeyspace(self.db.open_tree(keyspace_tree(component))?)))
    }

    fn names(&self) -> Result<Vec<String>, StorageError> {
        Ok(self
            .db
            .tree_names()
            .iter()
            .filter_map(|name| std::str::from_utf8(name).ok()?.strip_prefix(KEYSPACE_PREFIX))
            .map(str::to_string)
            .collect())
    }

    fn purge(&self, component: &str) -> Result<(), StorageError> {
        self.db.drop_tree(keyspace_tree(component))?;
        Ok(())
    }

    fn flush(&self) -> Flushing<'_> {
        Box::pin(async move {
            self.flusher.flush().await.map_err(|e| StorageError::Backend(Box::new(e)))
        })
    }

    fn check(&self) -> Result<(), StorageError> {
        // Ready means writes are taken: not below the disk's watermark
        // (and the probe would be a write).
        if let Some(why) = disk::refusal() {
            return Err(StorageError::NoSpace(why));
        }
        let tree = self.db.open_tree("pitstop/health")?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_be_bytes();
        tree.insert("probe", &stamp)?;
        match tree.get("probe")? {
            Some(read) if read == stamp[..] => Ok(()),
            _ => Err(StorageError::Backend("storage did not read back what it wrote".into())),
        }
    }
}

/// One keyspace: a sled tree.
pub struct SledKeyspace(sled::Tree);

impl SledKeyspace {
    /// The keyspace held by `tree`.
    pub fn new(tree: sled::Tree) -> Self {
        SledKeyspace(tree)
    }
}

impl Keyspace for SledKeyspace {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }

    fn range_from(&self, start: Bound<&[u8]>) -> Entries<'_> {
        let start = start.map(<[u8]>::to_vec);
        Box::new(
            self.0
                .range::<Vec<u8>, _>((start, Bound::Unbounded))
                .map(|entry| entry.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into)),
        )
    }

    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        // Below the disk's watermark only removals go through: they let a
        // component free space, and need little of it.
        if batch.writes.iter().any(|(_, value)| value.is_some())
            && let Some(why) = disk::refusal()
        {
            return Err(StorageError::NoSpace(why));
        }
        let size = batch.writes.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len));
        disk::note_written(size.sum::<usize>() as u64);
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.writes {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        Ok(self.0.apply_batch(sled_batch)?)
    }

    fn contains(&self, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.0.contains_key(key)?)
    }

    fn durable(&self) -> Result<(), StorageError> {
        self.0.flush()?;
        Ok(())
    }
}
