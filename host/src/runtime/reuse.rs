//! Opt-in instance reuse: a warm instance serves one invocation after
//! another, instead of a fresh one per invocation.
//!
//! A fresh instance per invocation is the default, and the isolation most
//! services should keep: nothing a request leaves in the guest's memory is
//! seen by the next. Its price is an instantiation per request, which for a
//! big interpreted component (a Python interpreter with its standard
//! library in data segments) is most of the request. A component configured
//! with `reuse` (`[components.NAME] reuse = { max_requests = 1000 }`) trades
//! that isolation for speed, the way `wasmtime serve`'s instance reuse and
//! wasmCloud's warm pools do:
//!
//! - **One invocation at a time.** An instance is taken out of its
//!   version's [`WarmPool`] for an invocation and put back after it, so two
//!   invocations never share one instance at once.
//! - **Fresh per-invocation state.** The keyvalue write set, the identity
//!   its calls carry, the deadline, the trace, the turn and the output
//!   budget are the invocation's own ([`ComponentState::begin`]), exactly
//!   as with a fresh instance.
//! - **What persists** is the guest's own: its linear memory, its globals,
//!   and WASI resources it keeps open. A guest must not keep a request's
//!   secrets in them.
//! - **Discarded** after a trap or a missed deadline (the failed run drops
//!   its store), an answer of 500 or more, a handler error or a commit that
//!   lost, `max_requests` invocations, or when its largest linear memory
//!   grew past `max_memory`.
//! - **Per version.** A swap starts with an empty pool; the old version's
//!   warm instances go with it once its last invocation ends.

use std::sync::Mutex;

use wasmtime::Store;
use wasmtime::component::Instance;

use crate::runtime::state::ComponentState;

/// When a component's instances are reused, and when they are retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReusePolicy {
    /// Invocations one instance serves before it is discarded.
    pub max_requests: u32,
    /// An instance whose largest linear memory grew past this many bytes
    /// is discarded after its invocation.
    pub max_memory: usize,
}

/// An instance between two invocations, with the store it lives in.
pub(crate) struct Warm {
    pub(crate) store: Store<ComponentState>,
    pub(crate) instance: Instance,
    /// Invocations it has served.
    pub(crate) served: u32,
}

/// The idle instances of one deployed version.
pub struct WarmPool {
    policy: ReusePolicy,
    /// How many idle instances it keeps: more than run at once would only
    /// hold memory.
    capacity: usize,
    idle: Mutex<Vec<Warm>>,
}

impl WarmPool {
    /// A pool keeping at most `capacity` idle instances.
    pub fn new(policy: ReusePolicy, capacity: usize) -> Self {
        WarmPool { policy, capacity: capacity.max(1), idle: Mutex::new(Vec::new()) }
    }

    /// An idle instance, if there is one.
    pub(crate) fn take(&self) -> Option<Warm> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Keep `warm`, which has just served an invocation well, unless it
    /// has served its share, grew too big or the pool is full.
    pub(crate) fn put_back(&self, mut warm: Warm) {
        warm.served += 1;
        if warm.served >= self.policy.max_requests
            || warm.store.data().peak_memory() > self.policy.max_memory
        {
            return;
        }
        warm.store.data_mut().park();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.capacity {
            idle.push(warm);
        }
        // Otherwise it is dropped here, after the lock: dropping a store
        // unmaps memory, which nobody needs to wait for.
    }

    /// How many idle instances it holds.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
