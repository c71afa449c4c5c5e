//! One change at a time per component name, on this host (see the
//! `names` lock of [`Deployments`]; across a cluster's hosts, the record's
//! compare-and-swap does the same).

use std::collections::HashMap;
use std::sync::Arc;

use super::Deployments;

impl Deployments {
    /// Wait for the lock of changes to `name` (see the struct's fields).
    pub(super) async fn lock_name(&self, name: &str) -> NameLock<'_> {
        let lock = {
            let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            names.entry(name.to_string()).or_default().clone()
        };
        NameLock { names: &self.names, name: name.to_string(), held: Some(lock.lock_owned().await) }
    }

    /// The lock of changes to `name` if no one holds it now.
    pub(super) fn try_lock_name(&self, name: &str) -> Option<NameLock<'_>> {
        let lock = {
            let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            names.entry(name.to_string()).or_default().clone()
        };
        // On failure the clone is dropped here and the entry stays for
        // whoever holds it; their NameLock removes it.
        let held = lock.try_lock_owned().ok()?;
        Some(NameLock { names: &self.names, name: name.to_string(), held: Some(held) })
    }
}

/// Changes to one name, held: on release the name's entry is dropped from
/// the map unless someone else waits for it, so the map holds only names
/// being changed (not every name ever tried).
pub(super) struct NameLock<'a> {
    names: &'a std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    name: String,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for NameLock<'_> {
    fn drop(&mut self) {
        self.held = None;
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        // Clones are made under this map lock: a count of one means no
        // one holds or waits for this name.
        if names.get(&self.name).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            names.remove(&self.name);
        }
    }
}
