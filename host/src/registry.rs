//! Which version of each component is active.
//!
//! Readers load an immutable map through [`ArcSwap`] and never wait; a writer
//! copies the map, changes one entry and swaps it in. An invocation holds its
//! `Arc<Deployment>`, so replacing a component never disturbs one in flight.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::bindings::ServicePre;
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
    pub pre: ServicePre<ComponentState>,
    /// The component's keyspace.
    pub keyspace: sled::Tree,
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

    /// Names of the active components, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.active.load().keys().cloned().collect();
        names.sort();
        names
    }
}
