//! Which version of each component is active.
//!
//! Readers load an immutable map through [`ArcSwap`] and never wait; a writer
//! copies the map, changes one entry and swaps it in. An invocation holds its
//! `Arc<Deployment>`, so replacing a component never disturbs one in flight.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::bindings::{events, handler};
use crate::resilience::breaker::Breaker;
use crate::resilience::bulkhead::Bulkhead;
use crate::resilience::turns::Turns;
use crate::runtime::state::ComponentState;

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
    /// Where requests enter it.
    pub entry: Entry,
    /// Where its events export is, if it has one.
    pub events: Option<events::GuestIndices>,
    /// The topics it declared (none without an events export).
    pub topics: Arc<crate::capabilities::bus::Topics>,
    /// The component's keyspace.
    pub keyspace: Arc<dyn crate::storage::Keyspace>,
    /// This version's circuit breaker: a swap starts with a fresh one, so a
    /// fixed version is not refused for its predecessor's failures.
    pub breaker: Breaker,
    /// This version's limit on instances running at once.
    pub bulkhead: Bulkhead,
    /// This version's turns at the CPU: instances executing guest code at once.
    pub turns: Turns,
    /// The keyspace's size against its quota; shared by every version.
    pub usage: Arc<crate::capabilities::keyvalue::Usage>,
    /// Its metric handles.
    pub metrics: Arc<crate::metrics::ComponentMetrics>,
    /// Its idle instances, when the component reuses them.
    pub warm: Option<crate::runtime::reuse::WarmPool>,
}

/// How a component takes requests.
#[derive(Clone)]
pub enum Entry {
    /// A pitstop service: `pitstop:platform/handler`.
    Service(handler::GuestIndices),
    /// A standard `wasi:http/proxy` component: `wasi:http/incoming-handler`.
    Proxy(wasmtime_wasi_http::p2::bindings::ProxyIndices),
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
