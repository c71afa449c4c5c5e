//! Locks on counter keys, so that concurrent increments of one key return
//! distinct, consecutive values.
//!
//! An increment returns the value it makes, but commits only with its
//! invocation. Two invocations adding to the same committed value would
//! both return it plus one. So the first increment of a key in an
//! invocation takes the key's lock and holds it until the invocation has
//! committed or failed: the next incrementer then reads what this one
//! committed. The commit still checks that the value it counted from is
//! the one committed (an expectation, as a compare-and-swap has), so a
//! plain `set` of the key by an invocation holding no lock, or another
//! host of a cluster, makes the increment run again rather than repeat a
//! value.
//!
//! Two invocations incrementing two keys in opposite orders wait for each
//! other until their deadline (both answer 504); increment keys in one
//! order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// The counter locks of one keyspace, shared by every version of its
/// component.
#[derive(Default)]
pub struct CounterLocks {
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A counter key's lock, held by one invocation.
pub struct CounterLock {
    key: String,
    locks: Arc<CounterLocks>,
    // Dropped before the map entry is looked at (field order).
    guard: Option<OwnedMutexGuard<()>>,
}

impl CounterLocks {
    /// `key`'s lock, once every invocation holding it has let it go.
    pub async fn lock(self: &Arc<Self>, key: &str) -> CounterLock {
        let lock = {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.entry(key.to_string()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        CounterLock { key: key.to_string(), locks: self.clone(), guard: Some(guard) }
    }

    /// Keys with a lock held or waited for.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.lock().unwrap().len()
    }
}

impl CounterLock {
    /// The key it locks.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for CounterLock {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Forget the key once nobody holds or waits for it: the map only
        // ever holds the keys being counted now.
        let mut keys = self.locks.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.get(&self.key).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_held_by_one_at_a_time_and_forgotten_after() {
        let locks = Arc::new(CounterLocks::default());
        let first = locks.lock("n").await;
        let waiting = tokio::spawn({
            let locks = locks.clone();
            async move { locks.lock("n").await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the second waits for the first");
        let other = locks.lock("m").await;
        drop(first);
        let second = waiting.await.unwrap();
        assert_eq!((second.key(), locks.len()), ("n", 2));
        drop((second, other));
        assert_eq!(locks.len(), 0);
    }
}
