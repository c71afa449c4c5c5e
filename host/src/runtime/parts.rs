//! What the runtime shares with the rest of the host: the embedded
//! database, the keyspace store, the event queue, the registry of active
//! deployments and the metrics. Whoever starts a host (`platform.rs`, the
//! test runner, a benchmark) builds them once and hands each to the part
//! that needs it: the runtime, the control plane, the admin API. No one asks
//! the runtime for them.

use std::sync::Arc;

use crate::events::EventQueue;
use crate::events::queue::{Bus, BusOptions};
use crate::metrics::Metrics;
use crate::runtime::StartError;
use crate::runtime::registry::Registry;
use crate::storage::embedded::SledStore;
use crate::storage::{KeyspaceStore, StorageError};

/// The shared parts of one host.
#[derive(Clone)]
pub struct Parts {
    /// The embedded database: the queue and the deployment records on one
    /// host, what is this host's own on a cluster.
    pub db: sled::Db,
    /// Where components' keyspaces live.
    pub keyspaces: Arc<dyn KeyspaceStore>,
    /// The event queue.
    pub bus: Arc<dyn EventQueue>,
    /// The active deployments, read by every request.
    pub registry: Arc<Registry>,
    /// The host's metrics.
    pub metrics: Arc<Metrics>,
}

impl Parts {
    /// Everything on the embedded store: keyspaces and queue in `db`.
    pub fn embedded(db: sled::Db, bus: BusOptions) -> Result<Parts, StartError> {
        let keyspaces = Arc::new(SledStore::new(db.clone())?);
        let bus = Arc::new(Bus::open(&db, bus).map_err(StorageError::from)?);
        Ok(Parts::with_backends(db, keyspaces, bus))
    }

    /// Keyspaces in `keyspaces` and events in `bus` (a cluster's), records
    /// in `db`.
    pub fn with_backends(
        db: sled::Db,
        keyspaces: Arc<dyn KeyspaceStore>,
        bus: Arc<dyn EventQueue>,
    ) -> Parts {
        Parts { db, keyspaces, bus, registry: Arc::default(), metrics: Arc::default() }
    }
}
