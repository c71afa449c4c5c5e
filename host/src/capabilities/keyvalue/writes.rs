//! What one invocation wrote, buffered until it commits.

use std::collections::BTreeMap;

/// A write waiting for the invocation to commit.
#[derive(Debug, Clone)]
pub enum PendingWrite {
    /// Store these bytes.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
    /// Add to the counter as it is at commit time, so concurrent increments
    /// of one key are never lost.
    Add(i64),
}

/// What one invocation wrote, to be committed atomically or dropped.
#[derive(Debug, Default)]
pub struct Writes {
    /// The last write to each key.
    pub pending: BTreeMap<String, PendingWrite>,
    /// Committed values that writes depended on (a compare-and-swap's
    /// `expected`): the commit fails if any of them changed meanwhile.
    pub expectations: BTreeMap<String, Option<Vec<u8>>>,
}

impl Writes {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Bytes an entry takes against the quota.
pub fn entry_size(key: &[u8], value: Option<&[u8]>) -> u64 {
    value.map_or(0, |v| (key.len() + v.len()) as u64)
}
