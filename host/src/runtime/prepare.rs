//! From a compiled component to a deployment: check it against the
//! platform, pre-link it, read the topics it declares, and give it its
//! breaker, bulkhead and turns.

use std::sync::Arc;
use std::time::Duration;

use pitstop_gateway::TraceContext;
use tokio::time::Instant;
use wasmtime::component::{Component, InstancePre};

use crate::bindings::{events, handler};
use crate::capabilities::bus::Topics;
use crate::capabilities::keyvalue::Usage;
use crate::invoke::CallContext;
use crate::resilience::breaker::{Breaker, SystemClock};
use crate::resilience::bulkhead::Bulkhead;
use crate::resilience::connections::ComponentConnections;
use crate::resilience::memory::ComponentMemory;
use crate::resilience::turns::{Turn, Turns};
use crate::runtime::Runtime;
use crate::runtime::artifacts::{ArtifactCache, CompileError, Origin};
use crate::runtime::canary::Traffic;
use crate::runtime::instance::Owner;
use crate::runtime::proxy::PROXY_EXPORT;
use crate::runtime::registry::{Deployment, Entry};
use crate::runtime::reuse::WarmPool;
use crate::runtime::scheduling::ANSWER_GRACE;
use crate::runtime::state::ComponentState;
use crate::storage::{Keyspace, StorageError};
use wasmtime_wasi_http::p2::bindings::ProxyIndices;

/// The exported interface that declares topics and receives events.
const EVENTS_EXPORT: &str = "pitstop:platform/events@0.1.0";
/// The export a pitstop service answers requests with.
const HANDLER_EXPORT: &str = "pitstop:platform/handler@0.1.0";
/// How long a component's `declare` may take at deploy time.
const DECLARE_DEADLINE: Duration = Duration::from_secs(2);
/// Why a component could not be deployed. The active version, if any, is untouched.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The name is not `[a-z][a-z0-9-]{0,62}`.
    #[error("invalid component name {0:?}: use 1-63 of a-z, 0-9 and '-', starting with a letter")]
    InvalidName(String),
    /// The bytes are not a WebAssembly component at all.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component header is there, but the rest does not validate.
    #[error("invalid WebAssembly component: {0}")]
    Invalid(String),
    /// A component, but not one pitstop can run.
    #[error("component does not fit the pitstop:platform/service world: {0}")]
    Incompatible(String),
    /// No component of that name is deployed.
    #[error("component {0:?} is not deployed")]
    Unknown(String),
    /// The component keeps no version of that number.
    #[error("{0}")]
    UnknownVersion(String),
    /// Rollback asked for, but there is no earlier version.
    #[error("component {0:?} has no earlier version to roll back to")]
    NoEarlierVersion(String),
    /// A route that is not a path prefix at all.
    #[error("{0}")]
    MalformedRoute(String),
    /// A route cannot be given to this component.
    #[error("{0}")]
    Route(String),
    /// A canary cannot be started, promoted or dropped now (no active
    /// version, no canary).
    #[error("{0}")]
    Canary(String),
    /// Another host of the cluster changed the component at the same time;
    /// nothing of this change was saved.
    #[error("component {0:?} was changed through another host meanwhile; retry")]
    Concurrent(String),
    /// The store failed.
    #[error("storage failed: {0}")]
    Db(#[from] sled::Error),
    /// The keyspace store failed.
    #[error(transparent)]
    Keyspace(#[from] StorageError),
    /// Files beside the store (component bytes, records) could not be
    /// written or read back.
    #[error("storage failed: {0}")]
    Storage(String),
}

/// A component checked against the platform and pre-linked, ready to become
/// a [`Deployment`].
pub struct Prepared {
    pre: InstancePre<ComponentState>,
    entry: Entry,
    events: Option<events::GuestIndices>,
    topics: Arc<Topics>,
    /// Compiled now, not yet in the artifact cache.
    unkept: Option<Unkept>,
    cached: bool,
}

impl Prepared {
    /// Whether it was loaded from the artifact cache, not compiled.
    pub fn cached(&self) -> bool {
        self.cached
    }

    /// The artifact compiled for it, to keep once it serves: a component
    /// refused after this (a route taken meanwhile) leaves nothing behind.
    pub fn take_unkept(&mut self) -> Option<Unkept> {
        self.unkept.take()
    }
}

/// A compiled component not yet in the artifact cache.
pub struct Unkept {
    cache: Arc<ArtifactCache>,
    digest: String,
    component: Component,
}

impl Unkept {
    /// Write it to the cache, so that restarts and rollbacks load it
    /// instead of compiling ([`ArtifactCache::keep`]: a failure is logged).
    pub async fn keep(self) {
        self.cache.keep(&self.digest, &self.component).await;
    }
}

impl Runtime {
    /// The component whose bytes have sha256 `digest` (read with `bytes`
    /// only if the artifact cache lacks it), compiled, checked against the
    /// platform and pre-linked ([`Runtime::check`]).
    pub async fn prepare(
        self: &Arc<Self>,
        name: &str,
        digest: &str,
        bytes: impl FnOnce() -> std::io::Result<Vec<u8>> + Send + 'static,
        keyspace: &Arc<dyn Keyspace>,
    ) -> Result<Prepared, DeployError> {
        let (component, origin) =
            self.artifacts.load(digest, bytes).await.map_err(|error| match error {
                CompileError::Invalid(message) => DeployError::Invalid(message),
                CompileError::Io(message) => DeployError::Storage(message),
            })?;
        let mut prepared = self.check(name, &component, keyspace).await?;
        prepared.cached = origin == Origin::Cached;
        if origin == Origin::Compiled {
            let cache = self.artifacts.clone();
            prepared.unkept = Some(Unkept { cache, digest: digest.to_string(), component });
        }
        Ok(prepared)
    }

    /// Check a compiled component against the platform and pre-link it:
    /// every import must be one the platform provides, the handler must be
    /// exported with the right type, and if it exports `events`, its
    /// declared topics are read (from a throwaway instance) and checked.
    async fn check(
        self: &Arc<Self>,
        name: &str,
        component: &Component,
        keyspace: &Arc<dyn Keyspace>,
    ) -> Result<Prepared, DeployError> {
        let incompatible = |e: wasmtime::Error| DeployError::Incompatible(format!("{e:#}"));
        let pre =
            self.linker_for(component.engine()).instantiate_pre(component).map_err(incompatible)?;
        // A pitstop service, else a wasi:http/proxy component; a component
        // with neither gets the handler's error (the world check before
        // compiling has said it in plain words already).
        let entry = match component.get_export_index(None, PROXY_EXPORT) {
            Some(_) if component.get_export_index(None, HANDLER_EXPORT).is_none() => {
                Entry::Proxy(ProxyIndices::new(&pre).map_err(incompatible)?)
            }
            _ => Entry::Service(handler::GuestIndices::new(&pre).map_err(incompatible)?),
        };
        let events = match component.get_export_index(None, EVENTS_EXPORT) {
            Some(_) => Some(events::GuestIndices::new(&pre).map_err(incompatible)?),
            None => None,
        };
        let topics = Arc::new(Topics::default());
        let mut prepared = Prepared { pre, entry, events, topics, unkept: None, cached: false };
        if let Some(indices) = prepared.events.clone() {
            // On the guest pool: a `declare` that loops must not hold a
            // thread of the control plane.
            let runtime = self.clone();
            let (name, pre, keyspace) = (name.to_string(), prepared.pre.clone(), keyspace.clone());
            let declared = self.guests.spawn(async move {
                runtime.declared_topics(&name, &pre, &indices, &keyspace).await
            });
            let topics = declared
                .until(Instant::now() + DECLARE_DEADLINE + ANSWER_GRACE)
                .await
                .unwrap_or_else(|| {
                    Err(DeployError::Incompatible(format!(
                        "declare did not return in time ({} s)",
                        DECLARE_DEADLINE.as_secs()
                    )))
                })?;
            prepared.topics = Arc::new(topics);
        }
        Ok(prepared)
    }

    async fn declared_topics(
        self: &Arc<Self>,
        name: &str,
        pre: &InstancePre<ComponentState>,
        indices: &events::GuestIndices,
        keyspace: &Arc<dyn Keyspace>,
    ) -> Result<Topics, DeployError> {
        let settings = self.options.settings(name);
        let usage = self.usage(name, keyspace);
        // A call chain already at its limit: `declare` may not call out.
        let call = CallContext {
            depth: self.options.max_call_depth,
            deadline: Instant::now() + DECLARE_DEADLINE,
            trace: TraceContext::new_root(),
        };
        let metrics = Arc::new(self.metrics.component(name));
        let owner = Owner {
            component: name.into(),
            keyspace,
            usage,
            memory: self.component_memory(name),
            connections: self.component_connections(name),
            topics: Arc::default(),
            metrics,
            settings,
        };
        let mut store = self.new_store(pre.engine(), owner, call, Turn::unlimited());
        let declare = async {
            let instance = pre.instantiate_async(&mut store).await?;
            indices.load(&mut store, &instance)?.call_declare(&mut store).await
        };
        let too_slow = || {
            DeployError::Incompatible(format!(
                "declare did not return in time ({} s)",
                DECLARE_DEADLINE.as_secs()
            ))
        };
        let declared = tokio::time::timeout(DECLARE_DEADLINE, declare)
            .await
            .map_err(|_| too_slow())?
            .map_err(|e| match e.downcast_ref::<wasmtime::Trap>() {
                // The epoch deadline stopped a guest that computes for ever.
                Some(wasmtime::Trap::Interrupt) => too_slow(),
                _ => DeployError::Incompatible(format!("declare failed: {e:#}")),
            })?;
        Topics::declared(declared.publishes, declared.subscribes)
            .map_err(|e| DeployError::Incompatible(format!("declare: {e}")))
    }

    /// Compile `bytes`, check and pre-link them, and make them the active
    /// version of `name` (the next version number), bypassing the control
    /// plane: nothing is persisted and no route changes. For the test
    /// runner, the test harness and benchmarks; `pitstop serve` deploys
    /// through [`crate::control::deployments::Deployments`].
    pub async fn activate_unrecorded(
        self: &Arc<Self>,
        name: &str,
        bytes: &[u8],
    ) -> anyhow::Result<Arc<Deployment>> {
        let component = Component::new(self.engines.for_component(bytes), bytes)
            .map_err(|e| anyhow::anyhow!("compiling {name}: {e:#}"))?;
        let keyspace = self.keyspaces.open(name)?;
        let prepared = self.check(name, &component, &keyspace).await?;
        let version = self.registry.get(name).map_or(1, |d| d.version + 1);
        let deployment =
            self.deployment(name, version, String::new(), bytes.len(), prepared, keyspace);
        self.registry.activate(deployment.clone());
        Ok(deployment)
    }

    /// A deployment of `name`, with a fresh breaker and bulkhead from its settings.
    pub fn deployment(
        &self,
        name: &str,
        version: u64,
        digest: String,
        size: usize,
        prepared: Prepared,
        keyspace: Arc<dyn Keyspace>,
    ) -> Arc<Deployment> {
        let settings = self.options.settings(name);
        let usage = self.usage(name, &keyspace);
        let memory = self.component_memory(name);
        let connections = self.component_connections(name);
        let metrics = Arc::new(self.metrics.component(name));
        self.metrics.breaker_reset(name);
        let observer = {
            let metrics = self.metrics.clone();
            let name = name.to_string();
            Arc::new(move |to| metrics.breaker(&name, to))
        };
        let traffic = Traffic::new(self.metrics.version(name, version));
        let name: Arc<str> = name.into();
        let parallel = settings.max_parallel.unwrap_or(self.guests.threads() as u32);
        Arc::new(Deployment {
            usage,
            memory,
            connections,
            metrics,
            breaker: Breaker::new(name.clone(), settings.breaker, Arc::new(SystemClock))
                .on_transition(observer),
            bulkhead: Bulkhead::new(settings.max_concurrency),
            turns: Turns::new(parallel),
            // As many idle instances as may run at once: more would only
            // hold memory.
            warm: settings.reuse.map(|policy| WarmPool::new(policy, parallel as usize)),
            traffic,
            name,
            version,
            digest,
            size,
            pre: prepared.pre,
            entry: prepared.entry,
            events: prepared.events,
            topics: prepared.topics,
            keyspace,
        })
    }

    /// The host memory `name` holds, made on first use.
    fn component_memory(&self, name: &str) -> Arc<ComponentMemory> {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let limit = self.options.component_memory(name);
        memory
            .entry(name.to_string())
            .or_insert_with(|| self.host_memory.component(name, limit))
            .clone()
    }

    /// The outgoing connections `name` holds, made on first use.
    pub(super) fn component_connections(&self, name: &str) -> Arc<ComponentConnections> {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let limit = self.options.settings(name).max_outbound_connections;
        let make = || self.host_connections.component(name, limit);
        connections.entry(name.to_string()).or_insert_with(make).clone()
    }

    /// The keyspace usage of `name`, counted on first use.
    fn usage(&self, name: &str, keyspace: &Arc<dyn Keyspace>) -> Arc<Usage> {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let limit = self.options.settings(name).max_keyspace_bytes;
        usage
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Usage::scan(&**keyspace, limit)))
            .clone()
    }
}
