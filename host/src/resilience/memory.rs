//! Host memory held for guests, charged to the component that made the
//! host hold it, against a limit per component and one for the host.
//!
//! A guest's linear memory is bounded per instance by `max_memory`, but
//! a host holds more for it than that: the linear memories of all its
//! instances at once, the values a keyvalue call returns before they are
//! copied in, `cas` handles, events waiting for the commit, the write set,
//! answers of other services not read yet. Each of these takes a
//! [`Charge`] from the component's [`ComponentMemory`] *before* the bytes
//! are allocated, and gives it back when they are dropped. A charge that
//! would take the component past its limit, or the host past
//! `max_host_memory`, is refused: the host call fails in the guest with
//! the limit named, and nothing was allocated.
//!
//! The per-component limit keeps one component's flood from taking all of
//! the host's share, so the others keep room to run; the host-wide one
//! keeps the sum of every component's under what the machine can give.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The host's memory for guests: every component's charges together.
#[derive(Debug)]
pub struct HostMemory {
    used: AtomicU64,
    limit: u64,
}

/// Why a charge was refused. Its text is what the guest is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryRefused {
    /// The component holds its limit already.
    #[error(
        "host memory: {what} needs {bytes} more bytes, and component {component:?} holds \
         {used} of its {limit} (max_component_memory)"
    )]
    Component {
        /// The component.
        component: String,
        /// What the bytes were for.
        what: &'static str,
        /// The bytes asked for.
        bytes: u64,
        /// What the component held then.
        used: u64,
        /// Its limit.
        limit: u64,
    },
    /// The host holds its limit already.
    #[error(
        "host memory: {what} needs {bytes} more bytes, and the host holds {used} of its \
         {limit} for all components (max_host_memory)"
    )]
    Host {
        /// What the bytes were for.
        what: &'static str,
        /// The bytes asked for.
        bytes: u64,
        /// What the host held then.
        used: u64,
        /// Its limit.
        limit: u64,
    },
}

impl HostMemory {
    /// A host allowing `limit` bytes for all guests together.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(HostMemory { used: AtomicU64::new(0), limit })
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The accounts of component `name`, limited to `limit` bytes.
    pub fn component(self: &Arc<Self>, name: &str, limit: u64) -> Arc<ComponentMemory> {
        Arc::new(ComponentMemory {
            name: name.to_string(),
            used: AtomicU64::new(0),
            limit,
            host: self.clone(),
        })
    }

    /// The default host-wide limit: half of what this process may use (its
    /// cgroup's limit if it has one, else the machine's memory).
    pub fn default_limit() -> u64 {
        let machine = machine_memory().unwrap_or(8 << 30);
        let cgroup = cgroup_limit().unwrap_or(u64::MAX);
        machine.min(cgroup) / 2
    }

    fn take(&self, what: &'static str, bytes: u64) -> Result<(), MemoryRefused> {
        take(&self.used, self.limit, bytes).map_err(|used| MemoryRefused::Host {
            what,
            bytes,
            used,
            limit: self.limit,
        })
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// One component's share of [`HostMemory`], shared by all its versions.
#[derive(Debug)]
pub struct ComponentMemory {
    name: String,
    used: AtomicU64,
    limit: u64,
    host: Arc<HostMemory>,
}

impl ComponentMemory {
    /// An account with nothing charged, to grow with [`Charge::grow`].
    pub fn empty(self: &Arc<Self>) -> Charge {
        Charge { owner: self.clone(), bytes: 0 }
    }

    /// `bytes` for `what`, if the component and the host can hold them.
    pub fn charge(
        self: &Arc<Self>,
        what: &'static str,
        bytes: u64,
    ) -> Result<Charge, MemoryRefused> {
        let mut charge = self.empty();
        charge.grow(what, bytes)?;
        Ok(charge)
    }

    /// Bytes charged to the component now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Its limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn take(&self, what: &'static str, bytes: u64) -> Result<(), MemoryRefused> {
        take(&self.used, self.limit, bytes).map_err(|used| MemoryRefused::Component {
            component: self.name.clone(),
            what,
            bytes,
            used,
            limit: self.limit,
        })?;
        if let Err(refused) = self.host.take(what, bytes) {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(refused);
        }
        Ok(())
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.host.give_back(bytes);
    }
}

/// Add `bytes` to `used` unless that passes `limit`; `Err` holds what was
/// used then.
fn take(used: &AtomicU64, limit: u64, bytes: u64) -> Result<(), u64> {
    used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
        now.checked_add(bytes).filter(|after| *after <= limit)
    })
    .map(drop)
}

/// Bytes charged to a component, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    owner: Arc<ComponentMemory>,
    bytes: u64,
}

impl Charge {
    /// Charge `bytes` more for `what`; on refusal nothing changes.
    pub fn grow(&mut self, what: &'static str, bytes: u64) -> Result<(), MemoryRefused> {
        if bytes > 0 {
            self.owner.take(what, bytes)?;
            self.bytes += bytes;
        }
        Ok(())
    }

    /// Hold exactly `bytes` for `what`: more is charged (or refused, and
    /// nothing changes), less given back.
    pub fn resize(&mut self, what: &'static str, bytes: u64) -> Result<(), MemoryRefused> {
        if bytes >= self.bytes {
            self.grow(what, bytes - self.bytes)
        } else {
            self.owner.give_back(self.bytes - bytes);
            self.bytes = bytes;
            Ok(())
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.owner.give_back(self.bytes);
        }
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's cgroup v2 memory limit, if it has one.
fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let max = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/memory.max")).ok()?;
    max.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_past_either_limit_is_refused_and_changes_nothing() {
        let host = HostMemory::new(100);
        let a = host.component("a", 60);
        let b = host.component("b", 60);
        let held = a.charge("values", 50).unwrap();
        assert!(matches!(a.charge("values", 11), Err(MemoryRefused::Component { used: 50, .. })));
        let other = b.charge("values", 50).unwrap();
        // b is within its own limit, but the host holds 100 then.
        assert!(matches!(b.charge("values", 1), Err(MemoryRefused::Host { used: 100, .. })));
        assert_eq!((a.used(), b.used(), host.used()), (50, 50, 100));
        drop(held);
        assert_eq!((a.used(), host.used()), (0, 50));
        drop(other);
        assert_eq!(host.used(), 0);
    }

    #[test]
    fn a_charge_resizes_both_ways() {
        let host = HostMemory::new(100);
        let a = host.component("a", 100);
        let mut charge = a.empty();
        charge.resize("write set", 70).unwrap();
        assert!(charge.resize("write set", 101).is_err());
        assert_eq!(charge.bytes(), 70);
        charge.resize("write set", 20).unwrap();
        assert_eq!((a.used(), host.used()), (20, 20));
        drop(charge);
        assert_eq!(host.used(), 0);
    }
}
