//! A keyspace's size against its quota, shared by every version of a
//! component, the lock that serialises its commits and its counter locks.

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::counters::CounterLocks;

use crate::storage::Keyspace;
use crate::storage::reserved::is_charged_key;

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
    // The keyspace's counter locks, for the same reason.
    counters: Arc<CounterLocks>,
}

impl Usage {
    /// The usage of `keyspace`, limited to `limit` bytes.
    pub fn scan(keyspace: &dyn Keyspace, limit: u64) -> Self {
        let bytes = keyspace
            .range_from(Bound::Unbounded)
            .filter_map(Result::ok)
            .filter(|(k, _)| is_charged_key(k))
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        Usage {
            bytes: AtomicU64::new(bytes),
            limit,
            commits: Mutex::new(()),
            counters: Arc::default(),
        }
    }

    /// Held while a commit checks and writes the keyspace.
    pub(crate) fn commit_lock(&self) -> MutexGuard<'_, ()> {
        self.commits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The locks of its counter keys.
    pub(crate) fn counters(&self) -> &Arc<CounterLocks> {
        &self.counters
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

    /// Why the keyspace, changed from `old` to `new` bytes, and `backlog`
    /// bytes of its events queued or dead-lettered do not fit its quota
    /// together, if they do not.
    pub(crate) fn refuse_backlog(
        &self,
        keyspace: &dyn Keyspace,
        old: u64,
        new: u64,
        backlog: u64,
    ) -> Option<String> {
        let bytes = keyspace.guest_bytes().unwrap_or_else(|| self.bytes());
        let projected = bytes.saturating_sub(old) + new;
        (projected + backlog > self.limit).then(|| {
            format!(
                "the keyspace would hold {projected} bytes and its events waiting for delivery or \
                 dead-lettered {backlog}, together over its quota of {} (max_keyspace_bytes); \
                 replay or discard its dead letters",
                self.limit
            )
        })
    }

    /// How many more bytes of events fit the quota beside the keyspace and
    /// `backlog` bytes of events queued or dead-lettered.
    pub(crate) fn room_for_events(&self, keyspace: &dyn Keyspace, backlog: u64) -> u64 {
        let bytes = keyspace.guest_bytes().unwrap_or_else(|| self.bytes());
        self.limit.saturating_sub(bytes + backlog)
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
