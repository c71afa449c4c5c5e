//! Outgoing connections a guest holds open, per component and for the
//! host.
//!
//! Every outgoing `wasi:http` request to an allowed host opens a connection
//! (and a file descriptor) that lives until the guest is done with its
//! answer. Without a cap, five invocations fanning out 6,000 requests each
//! to a host that never answers held 16,901 descriptors and slowed every
//! other component. A request takes a [`ConnectionPermit`] from its
//! component and from the host before it connects, and gives it back when
//! its connection closes; when either has none left, the request fails at
//! once with `connection-limit-reached`, and nothing is opened.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The host's outgoing connections: every component's together.
pub struct HostConnections {
    permits: Arc<Semaphore>,
    limit: usize,
}

/// One component's share of [`HostConnections`], shared by all its versions.
pub struct ComponentConnections {
    name: String,
    permits: Arc<Semaphore>,
    limit: usize,
    host: Arc<HostConnections>,
}

/// One open connection, counted against its component and the host until
/// dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    _component: OwnedSemaphorePermit,
    _host: OwnedSemaphorePermit,
}

impl HostConnections {
    /// At most `limit` outgoing connections open at once on this host.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(HostConnections { permits: Arc::new(Semaphore::new(limit)), limit })
    }

    /// The default: half of the process's file descriptor limit (the other
    /// half stays for the gateway's clients, the store and the log), at most
    /// 16,384.
    pub fn default_limit() -> usize {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let soft = soft.unwrap_or(u64::MAX).min(1 << 20) as usize;
        (soft / 2).clamp(16, 16_384)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The connections of component `name`: at most `limit` at once.
    pub fn component(self: &Arc<Self>, name: &str, limit: usize) -> Arc<ComponentConnections> {
        Arc::new(ComponentConnections {
            name: name.to_string(),
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            host: self.clone(),
        })
    }
}

impl ComponentConnections {
    /// A permit for one more connection, or why there is none.
    pub fn open(&self) -> Result<ConnectionPermit, String> {
        let component = self.permits.clone().try_acquire_owned().map_err(|_| {
            format!(
                "component {:?} has {} outgoing connections open, its limit \
                 (max_outbound_connections)",
                self.name, self.limit
            )
        })?;
        let host = self.host.permits.clone().try_acquire_owned().map_err(|_| {
            format!(
                "the host has {} outgoing connections open, its limit (max_host_connections)",
                self.host.limit
            )
        })?;
        Ok(ConnectionPermit { _component: component, _host: host })
    }

    /// Connections open now.
    pub fn open_now(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_component_and_the_host_limits_both_hold_and_permits_come_back() {
        let host = HostConnections::new(3);
        let a = host.component("a", 2);
        let b = host.component("b", 2);
        let first = a.open().unwrap();
        let _second = a.open().unwrap();
        assert!(a.open().unwrap_err().contains("max_outbound_connections"));
        let _third = b.open().unwrap();
        assert!(b.open().unwrap_err().contains("max_host_connections"));
        drop(first);
        assert_eq!(a.open_now(), 1);
        b.open().expect("a connection closed: room again");
    }
}
