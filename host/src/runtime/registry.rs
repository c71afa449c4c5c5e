//! Which version of each component is active, and which takes a share of
//! its requests as a canary.
//!
//! Readers load an immutable map through [`ArcSwap`] and never wait; a writer
//! copies the map, changes one entry and swaps it in. An invocation holds its
//! `Arc<Deployment>`, so replacing a component never disturbs one in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::bindings::{events, handler};
use crate::resilience::breaker::{Breaker, State};
use crate::resilience::bulkhead::Bulkhead;
use crate::resilience::turns::Turns;
use crate::runtime::canary::TrafficSnapshot;
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
    /// The host memory it holds, against its limit and the host's; shared
    /// by every version.
    pub memory: Arc<crate::resilience::memory::ComponentMemory>,
    /// The outgoing connections it holds open; shared by every version.
    pub connections: Arc<crate::resilience::connections::ComponentConnections>,
    /// Its metric handles.
    pub metrics: Arc<crate::metrics::ComponentMetrics>,
    /// Its idle instances, when the component reuses them.
    pub warm: Option<crate::runtime::reuse::WarmPool>,
    /// What its requests did (see [`crate::runtime::canary`]).
    pub traffic: crate::runtime::canary::Traffic,
}

/// How a component takes requests.
#[derive(Clone)]
pub enum Entry {
    /// A pitstop service: `pitstop:platform/handler`.
    Service(handler::GuestIndices),
    /// A standard `wasi:http/proxy` component: `wasi:http/incoming-handler`.
    Proxy(wasmtime_wasi_http::p2::bindings::ProxyIndices),
}

/// A canary of one component, and what it is compared with.
pub struct Canary {
    /// The canary version.
    pub deployment: Arc<Deployment>,
    /// The share of requests it takes, 1 to 99.
    pub percent: u8,
    /// Whether the platform drops (or promotes) it on its own.
    pub auto: bool,
    /// The active version's traffic when the canary started: what it did
    /// since is what the canary is compared with.
    pub baseline: TrafficSnapshot,
    /// When it started.
    pub started: Instant,
}

impl Canary {
    /// Whether a request with stable identity `key` (if any) goes to the
    /// canary (see [`crate::runtime::canary`]).
    pub fn takes(&self, key: Option<&str>) -> bool {
        crate::runtime::canary::takes(self.deployment.version, self.percent, key)
    }
}

/// The active deployments, by name, and their canaries.
#[derive(Default)]
pub struct Registry {
    active: ArcSwap<HashMap<String, Arc<Deployment>>>,
    canaries: ArcSwap<HashMap<String, Arc<Canary>>>,
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
        let name = deployment.name.to_string();
        edit(&self.active, |map| map.insert(name.clone(), deployment.clone()))
    }

    /// Stop serving `name`, and drop its canary; returns the deployment
    /// that was active.
    pub fn remove(&self, name: &str) -> Option<Arc<Deployment>> {
        self.take_canary(name);
        edit(&self.active, |map| map.remove(name))
    }

    /// The version of `name` a request goes to: its canary's share of them
    /// (sticky per the request's `key`, see [`Canary::takes`], read only
    /// when there is a canary), else the active one.
    /// While the canary's circuit is open its share goes to the active
    /// version, and counts as a refusal of the canary, not as its failure
    /// (see [`crate::runtime::canary`]): its judge goes by the requests
    /// that opened it.
    pub fn choose<'k>(
        &self,
        name: &str,
        key: impl FnOnce() -> Option<&'k str>,
    ) -> Option<Arc<Deployment>> {
        if let Some(canary) = self.canaries.load().get(name)
            && canary.takes(key())
        {
            if canary.deployment.breaker.snapshot().state != State::Open {
                return Some(canary.deployment.clone());
            }
            canary.deployment.traffic.refused();
        }
        self.get(name)
    }

    /// The canary of `name`, if it has one.
    pub fn canary(&self, name: &str) -> Option<Arc<Canary>> {
        self.canaries.load().get(name).cloned()
    }

    /// Every canary now.
    pub fn canaries(&self) -> Vec<Arc<Canary>> {
        self.canaries.load().values().cloned().collect()
    }

    /// Give `canary` its share of its component's requests; returns the
    /// canary it replaced.
    pub fn set_canary(&self, canary: Canary) -> Option<Arc<Canary>> {
        let (name, canary) = (canary.deployment.name.to_string(), Arc::new(canary));
        edit(&self.canaries, |map| map.insert(name.clone(), canary.clone()))
    }

    /// Send all of `name`'s requests to its active version again; returns
    /// the canary dropped.
    pub fn take_canary(&self, name: &str) -> Option<Arc<Canary>> {
        edit(&self.canaries, |map| map.remove(name))
    }
}

/// Copy `map`, apply `change` to the copy and swap it in (again, if another
/// writer got there first); returns what `change` returned last.
fn edit<T>(
    map: &ArcSwap<HashMap<String, Arc<T>>>,
    change: impl Fn(&mut HashMap<String, Arc<T>>) -> Option<Arc<T>>,
) -> Option<Arc<T>> {
    let mut previous = None;
    map.rcu(|current| {
        let mut next = HashMap::clone(current);
        previous = change(&mut next);
        next
    });
    previous
}
