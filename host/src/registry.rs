//! Which version of each component is active.
//!
//! Readers load an immutable map through [`ArcSwap`] and never wait; a writer
//! copies the map, changes one entry and swaps it in. An invocation holds its
//! `Arc<Deployment>`, so replacing a component never disturbs one in flight.

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::atomic::{AtomicU32, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::bindings::{events, handler};
use crate::breaker::Breaker;
use crate::invoke::InvokeFailure;
use crate::state::ComponentState;

/// One compiled, pre-linked version of a component, ready to instantiate.
pub struct Deployment {
    /// The component's name.
    pub name: Arc<str>,
    /// Grows by one with each deploy of this name.
    pub version: u64,
    /// sha256 of the component bytes, lower-case hex.
    pub digest: String,
    /// Size of the component bytes.
    pub size: usize,
    /// Type-checked and linked once; each request instantiates from it.
    pub pre: wasmtime::component::InstancePre<ComponentState>,
    /// Where its handler export is.
    pub handler: handler::GuestIndices,
    /// Where its events export is, if it has one.
    pub events: Option<events::GuestIndices>,
    /// The topics it declared (none without an events export).
    pub topics: Arc<crate::bus::Topics>,
    /// The component's keyspace.
    pub keyspace: sled::Tree,
    /// This version's circuit breaker: a swap starts with a fresh one, so a
    /// fixed version is not refused for its predecessor's failures.
    pub breaker: Breaker,
    /// This version's limit on instances running at once.
    pub bulkhead: Bulkhead,
    /// This version's turns at the CPU: instances executing guest code at once.
    pub turns: crate::scheduling::Turns,
    /// The keyspace's size against its quota; shared by every version.
    pub usage: Arc<crate::kv::Usage>,
    /// Its metric handles.
    pub metrics: Arc<crate::metrics::ComponentMetrics>,
}

/// Caps the instances of one deployment running at once. Excess calls wait
/// for a slot, at most as many as there are slots and never past their
/// deadline; calls beyond that are refused at once, so a flood cannot pile
/// up unbounded work behind a slow component.
pub struct Bulkhead {
    slots: Arc<Semaphore>,
    waiting: AtomicU32,
    max_waiting: u32,
}

impl Bulkhead {
    /// `slots` instances at once.
    pub fn new(slots: u32) -> Self {
        Bulkhead {
            slots: Arc::new(Semaphore::new(slots.max(1) as usize)),
            waiting: AtomicU32::new(0),
            max_waiting: slots.max(1),
        }
    }

    /// A slot, waiting for one until `deadline` if all are taken.
    pub async fn enter(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, InvokeFailure> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(InvokeFailure::Unavailable("too many concurrent calls".into()));
        }
        let waited_from = Instant::now();
        let slot = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match slot {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_)) => Err(InvokeFailure::Internal("bulkhead closed".into())),
            Err(_) => Err(InvokeFailure::Timeout {
                deadline_ms: deadline.saturating_duration_since(waited_from).as_millis() as u64,
            }),
        }
    }
}

/// The active deployments, by name.
#[derive(Default)]
pub struct Registry {
    active: ArcSwap<HashMap<String, Arc<Deployment>>>,
}

impl Registry {
    /// The active version of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Deployment>> {
        self.active.load().get(name).cloned()
    }

    /// Every active deployment, by name, as of now.
    pub fn active(&self) -> arc_swap::Guard<Arc<HashMap<String, Arc<Deployment>>>> {
        self.active.load()
    }

    /// Make `deployment` the active version of its name; returns the one it replaced.
    pub fn activate(&self, deployment: Arc<Deployment>) -> Option<Arc<Deployment>> {
        let mut previous = None;
        self.active.rcu(|current| {
            let mut next = HashMap::clone(current);
            previous = next.insert(deployment.name.to_string(), deployment.clone());
            next
        });
        previous
    }

    /// Stop serving `name`; returns the deployment that was active.
    pub fn remove(&self, name: &str) -> Option<Arc<Deployment>> {
        let mut previous = None;
        self.active.rcu(|current| {
            let mut next = HashMap::clone(current);
            previous = next.remove(name);
            next
        });
        previous
    }
}
