//! A keyspace's size against its quota, shared by every version of a
//! component, and the lock that serialises its commits.

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::storage::Keyspace;
use crate::storage::reserved::is_reserved_key;

/// How many bytes (keys plus values) a keyspace holds, against its quota.
///
/// Counted once by scanning the tree when the component is first loaded in
/// this process, then kept up to date by every commit. An invocation checks
/// each write, counting its own earlier writes, against it; the commit checks
/// again under the keyspace's commit lock, so concurrent writers cannot
/// overshoot the quota together either.
pub struct Usage {
    bytes: AtomicU64,
    limit: u64,
    // Serialises commits to the keyspace (see `crate::runtime::commit`); it lives
    // here because this is the one object every version of a component
    // shares for its keyspace.
    commits: Mutex<()>,
}

impl Usage {
    /// The usage of `keyspace`, limited to `limit` bytes.
    pub fn scan(keyspace: &dyn Keyspace, limit: u64) -> Self {
        let bytes = keyspace
            .range_from(Bound::Unbounded)
            .filter_map(Result::ok)
            .filter(|(k, _)| !is_reserved_key(k))
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        Usage { bytes: AtomicU64::new(bytes), limit, commits: Mutex::new(()) }
    }

    /// Held while a commit checks and writes the keyspace.
    pub(crate) fn commit_lock(&self) -> MutexGuard<'_, ()> {
        self.commits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Why replacing `old` bytes by `new` bytes does not fit, if it does
    /// not. A change that does not grow the keyspace always fits, so a full
    /// keyspace can still be cleaned up.
    /// The bytes held are those `keyspace` counts when it counts them (a
    /// keyspace other hosts write too), else this count.
    pub(crate) fn refuse(&self, keyspace: &dyn Keyspace, old: u64, new: u64) -> Option<String> {
        let bytes = keyspace.guest_bytes().unwrap_or_else(|| self.bytes());
        let projected = bytes.saturating_sub(old) + new;
        (new > old && projected > self.limit).then(|| {
            format!("the keyspace would hold {projected} bytes, its quota is {}", self.limit)
        })
    }

    pub(crate) fn record(&self, old: u64, new: u64) {
        if new >= old {
            self.bytes.fetch_add(new - old, Ordering::Relaxed);
        } else {
            let _ = self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(old - new))
            });
        }
    }
}
