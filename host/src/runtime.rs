//! The runtime: compiles components, keeps the active versions, and runs one
//! invocation from a fresh instance to a response.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pitstop_gateway::TraceContext;
use tokio::time::Instant;
use tracing::Instrument;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap};

use crate::bindings::types::{Header, Request, Response};
use crate::bindings::{events, handler};
use crate::breaker::{Breaker, BreakerConfig, SystemClock};
use crate::bus::{BusCtx, Topics};
use crate::commit::{CommitError, Effects, commit};
use crate::engine::{EPOCH_TICK, EngineLimits, EpochTicker, build_engine};
use crate::flusher::Flusher;
use crate::invoke::{CallContext, Invoke, InvokeFailure};
use crate::kv::{KeyvalueCtx, Usage};
use crate::log::{OutputBudget, OutputLimits};
use crate::metrics::{ComponentMetrics, Metrics};
use crate::queue::{Bus, BusOptions, QueuedEvent};
use crate::registry::{Bulkhead, Deployment, Registry};
use crate::scheduling::{ANSWER_GRACE, GuestPool, Turn, Turns, time_slice};
use crate::services::ServicesCtx;
use crate::state::ComponentState;

/// The exported interface that declares topics and receives events.
const EVENTS_EXPORT: &str = "pitstop:platform/events@0.1.0";
/// How long a component's `declare` may take at deploy time.
const DECLARE_DEADLINE: Duration = Duration::from_secs(2);
/// How often an invocation that lost a compare-and-swap race at commit is
/// run again from scratch, when it made no calls that could not be undone.
const CONFLICT_RETRIES: u32 = 3;

/// Tunables of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Pool sizes and the largest memory any instance may have.
    pub engine: EngineLimits,
    /// How deep a chain of `services` calls may go.
    pub max_call_depth: u32,
    /// Limits of components without settings of their own.
    pub defaults: ComponentSettings,
    /// Per-component limits, by name.
    pub components: HashMap<String, ComponentSettings>,
    /// Enforce the per-store limits (memory, instances, tables). Only
    /// benchmarks turn it off, to measure what it costs.
    pub store_limits: bool,
    /// Retry and dead-letter rules of the message bus.
    pub bus: BusOptions,
    /// Threads of the guest pool (default: one per CPU).
    pub guest_threads: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            engine: EngineLimits::default(),
            max_call_depth: 8,
            defaults: ComponentSettings::default(),
            components: HashMap::new(),
            store_limits: true,
            bus: BusOptions::default(),
            guest_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Limits that apply to each invocation of one component.
#[derive(Debug, Clone)]
pub struct ComponentSettings {
    /// How long one request (with every call it makes) may take.
    pub deadline: Duration,
    /// Linear memory one instance may grow to, in bytes.
    pub max_memory: usize,
    /// Instances running at once (the bulkhead); as many more may wait for
    /// a slot until their deadline, and beyond that calls get 503.
    pub max_concurrency: u32,
    /// Instances executing guest code at once (see [`crate::scheduling`]);
    /// `None`: as many as the guest pool has threads.
    pub max_parallel: Option<u32>,
    /// What one invocation may write to the log.
    pub output: OutputLimits,
    /// When its circuit opens.
    pub breaker: BreakerConfig,
    /// Bytes (keys plus values) its keyspace may hold.
    pub max_keyspace_bytes: u64,
    /// Bytes (keys plus values) one invocation may write before it commits.
    pub max_write_set_bytes: u64,
}

impl Default for ComponentSettings {
    fn default() -> Self {
        ComponentSettings {
            deadline: Duration::from_secs(5),
            max_memory: 64 << 20,
            max_concurrency: 100,
            max_parallel: None,
            output: OutputLimits::default(),
            breaker: BreakerConfig::default(),
            max_keyspace_bytes: 256 << 20,
            max_write_set_bytes: 16 << 20,
        }
    }
}

impl RuntimeOptions {
    /// The settings of `component`.
    pub fn settings(&self, component: &str) -> &ComponentSettings {
        self.components.get(component).unwrap_or(&self.defaults)
    }
}

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
    /// Rollback asked for, but there is no earlier version.
    #[error("component {0:?} has no earlier version to roll back to")]
    NoEarlierVersion(String),
    /// A route cannot be given to this component.
    #[error("{0}")]
    Route(String),
    /// The store failed.
    #[error("storage failed: {0}")]
    Db(#[from] sled::Error),
    /// Files beside the store (component bytes, records) could not be
    /// written or read back.
    #[error("storage failed: {0}")]
    Storage(String),
}

/// How the delivery of one event went.
#[derive(Debug)]
pub enum Delivery {
    /// The handler returned `ok`; its writes and the handled mark are committed.
    Handled,
    /// The handler failed (error, trap, deadline): counts as an attempt.
    Failed(String),
    /// The subscriber could not take it now; try again after this long
    /// without counting an attempt.
    NotNow(Duration),
}

/// What an invocation runs: a request, or an event delivery.
enum Call<'a> {
    Http(&'a Request),
    Event { event: events::Event, queue_key: Vec<u8> },
}

/// What the guest answered.
enum Answer {
    Http(Response),
    Event(Result<(), String>),
    /// It answered, but its commit kept losing to concurrent writers (or
    /// could not be run again): nothing of it was saved. A request gets 409.
    Conflict(String),
}

impl Answer {
    /// Whether the invocation's effects are to be committed: a response
    /// below 500, or `ok` from an event handler.
    fn succeeded(&self) -> bool {
        match self {
            Answer::Http(response) => response.status < 500,
            Answer::Event(result) => result.is_ok(),
            Answer::Conflict(_) => false,
        }
    }
}

/// A failure injected into every call of one component, by the test
/// [`crate::testing::Harness`]. The breaker counts it like the real thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The guest traps.
    Trap,
    /// The guest runs until its deadline.
    Timeout,
    /// The platform refuses the call as overloaded.
    Unavailable,
    /// The call runs normally after this long.
    Delay(Duration),
}

/// A component checked against the platform and pre-linked, ready to become
/// a [`Deployment`].
pub struct Prepared {
    pre: InstancePre<ComponentState>,
    handler: handler::GuestIndices,
    events: Option<events::GuestIndices>,
    topics: Arc<Topics>,
}

/// A response and the deployment that produced it.
pub struct Invoked {
    /// What the component answered.
    pub response: Response,
    /// Which version answered.
    pub deployment: Arc<Deployment>,
}

/// What a `services` call runs: [`Runtime::invoke`] as a nested call.
impl Invoke for Runtime {
    fn max_call_depth(&self) -> u32 {
        self.options.max_call_depth
    }

    fn invoke_nested(
        self: Arc<Self>,
        name: String,
        request: Request,
        context: CallContext,
    ) -> Pin<Box<dyn Future<Output = Result<Response, InvokeFailure>> + Send>> {
        Box::pin(async move {
            let invoked = self.invoke(&name, request, Some(context)).await?;
            Ok(invoked.response)
        })
    }
}

/// Compiles, holds and runs components. Shared as `Arc<Runtime>`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<ComponentState>,
    db: sled::Db,
    registry: Registry,
    bus: Bus,
    flusher: Flusher,
    faults: arc_swap::ArcSwap<HashMap<String, Fault>>,
    options: RuntimeOptions,
    metrics: Arc<Metrics>,
    // Per component name, so the count survives swaps.
    usage: std::sync::Mutex<HashMap<String, Arc<Usage>>>,
    guests: GuestPool,
    _ticker: EpochTicker,
}

/// Every interface a component can import: wasi 0.2 and the platform's own
/// capabilities. [`crate::world::PROVIDED`] lists the same names, so that a
/// deploy can be refused before compiling.
pub(crate) fn platform_linker(engine: &Engine) -> wasmtime::Result<Linker<ComponentState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::kv::add_to_linker(&mut linker, |state: &mut ComponentState| &mut state.kv)?;
    crate::services::add_to_linker(&mut linker, |state: &mut ComponentState| &mut state.services)?;
    crate::log::add_to_linker(&mut linker, |state: &mut ComponentState| &mut state.log)?;
    crate::bus::add_to_linker(&mut linker, |state: &mut ComponentState| &mut state.bus)?;
    Ok(linker)
}

impl Runtime {
    /// A runtime storing keyspaces in `db`.
    pub fn new(db: sled::Db, options: RuntimeOptions) -> anyhow::Result<Arc<Self>> {
        let engine = build_engine(&options.engine)?;
        let linker = platform_linker(&engine)?;
        let ticker = EpochTicker::start(engine.clone());
        let bus = Bus::open(&db, options.bus)?;
        let flusher = Flusher::start(db.clone())?;
        let guests = GuestPool::start(options.guest_threads)?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            db,
            bus,
            flusher,
            faults: Default::default(),
            registry: Registry::default(),
            options,
            metrics: Arc::default(),
            usage: Default::default(),
            guests,
            _ticker: ticker,
        }))
    }

    /// The runtime's tunables.
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The active deployments.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Make every call of `component` fail with `fault` (`None` heals it).
    pub fn inject_fault(&self, component: &str, fault: Option<Fault>) {
        self.faults.rcu(|current| {
            let mut next = HashMap::clone(current);
            match fault {
                Some(fault) => next.insert(component.to_string(), fault),
                None => next.remove(component),
            };
            next
        });
    }

    /// The linker every component is linked with: WASI and the platform's
    /// capabilities.
    pub fn linker(&self) -> &Linker<ComponentState> {
        &self.linker
    }

    /// The message bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Wait until everything written so far is on disk.
    pub async fn flush(&self) -> Result<(), String> {
        self.flusher.flush().await
    }

    /// The sled database behind every keyspace.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The engine every component is compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Check a compiled component against the platform and pre-link it:
    /// every import must be one the platform provides, the handler must be
    /// exported with the right type, and if it exports `events`, its
    /// declared topics are read (from a throwaway instance) and checked.
    pub async fn prepare(
        self: &Arc<Self>,
        name: &str,
        component: &Component,
        keyspace: &sled::Tree,
    ) -> Result<Prepared, DeployError> {
        let incompatible = |e: wasmtime::Error| DeployError::Incompatible(format!("{e:#}"));
        let pre = self.linker.instantiate_pre(component).map_err(incompatible)?;
        let handler = handler::GuestIndices::new(&pre).map_err(incompatible)?;
        let events = match component.get_export_index(None, EVENTS_EXPORT) {
            Some(_) => Some(events::GuestIndices::new(&pre).map_err(incompatible)?),
            None => None,
        };
        let mut prepared = Prepared { pre, handler, events, topics: Arc::new(Topics::default()) };
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
        keyspace: &sled::Tree,
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
        let mut store = self.new_store(
            name.into(),
            keyspace,
            usage,
            Arc::default(),
            metrics,
            settings,
            call,
            Turn::unlimited(),
        );
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

    /// Run `request` on the active version of `name` in a fresh instance,
    /// on the caller's own executor. `nested` is set for a `services` call:
    /// its depth, and the caller's deadline, which this invocation may not
    /// outlive. The gateway uses [`Runtime::invoke_traced`] instead.
    pub async fn invoke(
        self: &Arc<Self>,
        name: &str,
        request: Request,
        nested: Option<CallContext>,
    ) -> Result<Invoked, InvokeFailure> {
        let parent = nested.map(|n| n.trace);
        self.invoke_in_trace(name, request, nested, parent, Instant::now()).await
    }

    /// Run a request from the gateway on the guest pool, as a child of the
    /// span `parent`. Its deadline counts from `received`, when the gateway
    /// had read the request head, and it is answered by then (plus
    /// [`ANSWER_GRACE`]) however busy the pool is.
    pub async fn invoke_traced(
        self: &Arc<Self>,
        name: &str,
        request: Request,
        parent: TraceContext,
        received: Instant,
    ) -> Result<Invoked, InvokeFailure> {
        let deadline = self.options.settings(name).deadline;
        let runtime = self.clone();
        let owned = name.to_string();
        let task = self.guests.spawn(async move {
            runtime.invoke_in_trace(&owned, request, None, Some(parent), received).await
        });
        task.until(received + deadline + ANSWER_GRACE)
            .await
            .unwrap_or(Err(InvokeFailure::Timeout { deadline_ms: deadline.as_millis() as u64 }))
    }

    async fn invoke_in_trace(
        self: &Arc<Self>,
        name: &str,
        request: Request,
        nested: Option<CallContext>,
        parent: Option<TraceContext>,
        start: Instant,
    ) -> Result<Invoked, InvokeFailure> {
        let (answer, deployment) =
            self.invoke_call(name, Call::Http(&request), nested, parent, start).await?;
        match answer {
            Answer::Http(response) => Ok(Invoked { response, deployment }),
            Answer::Conflict(error) => {
                Ok(Invoked { response: conflict_response(&error), deployment })
            }
            Answer::Event(_) => unreachable!("a request is answered with a response"),
        }
    }

    /// Deliver `event` (queued at `queue_key`) to the active version of
    /// `subscriber`, on the guest pool.
    pub async fn deliver(
        self: &Arc<Self>,
        subscriber: &str,
        event: &QueuedEvent,
        queue_key: Vec<u8>,
    ) -> Delivery {
        let start = Instant::now();
        let deadline = start + self.options.settings(subscriber).deadline;
        let runtime = self.clone();
        let (owned, event) = (subscriber.to_string(), event.clone());
        let task = self
            .guests
            .spawn(async move { runtime.deliver_here(&owned, &event, queue_key, start).await });
        task.until(deadline + ANSWER_GRACE)
            .await
            .unwrap_or_else(|| Delivery::Failed("no answer within its deadline".into()))
    }

    async fn deliver_here(
        self: &Arc<Self>,
        subscriber: &str,
        event: &QueuedEvent,
        queue_key: Vec<u8>,
        start: Instant,
    ) -> Delivery {
        let call = Call::Event {
            event: events::Event {
                id: event.id.clone(),
                topic: event.topic.clone(),
                payload: event.payload.clone(),
                attempt: event.attempts,
                source: event.source.clone(),
                published_at: event.published_at,
            },
            queue_key,
        };
        match self.invoke_call(subscriber, call, None, event.trace(), start).await {
            Ok((Answer::Event(Ok(())), _)) => Delivery::Handled,
            Ok((Answer::Event(Err(error)), _)) => Delivery::Failed(format!("handler: {error}")),
            Ok((Answer::Conflict(error), _)) => Delivery::Failed(error),
            // An event call runs `handle-event`; were that ever to change,
            // fail the delivery rather than the dispatcher.
            Ok((Answer::Http(response), _)) => {
                Delivery::Failed(format!("answered HTTP {} to an event", response.status))
            }
            Err(InvokeFailure::CircuitOpen { retry_after }) => Delivery::NotNow(retry_after),
            Err(InvokeFailure::NotDeployed | InvokeFailure::Unavailable(_)) => {
                Delivery::NotNow(Duration::from_millis(500))
            }
            Err(failure) => Delivery::Failed(failure.to_string()),
        }
    }

    /// One invocation in its own span, a child of `parent`: the caller's
    /// span, the gateway's, or (for an event) the publisher's.
    async fn invoke_call(
        self: &Arc<Self>,
        name: &str,
        call: Call<'_>,
        nested: Option<CallContext>,
        parent: Option<TraceContext>,
        start: Instant,
    ) -> Result<(Answer, Arc<Deployment>), InvokeFailure> {
        let deployment = self.registry.get(name).ok_or(InvokeFailure::NotDeployed)?;
        let span = match &call {
            Call::Http(request) => tracing::info_span!(
                "invoke",
                component = %name,
                version = deployment.version,
                method = %request.method,
                path = %request.path,
                trace_id = tracing::field::Empty,
            ),
            Call::Event { event, .. } => tracing::info_span!(
                "deliver",
                component = %name,
                version = deployment.version,
                topic = %event.topic,
                event = %event.id,
                attempt = event.attempt,
                trace_id = tracing::field::Empty,
            ),
        };
        let trace = TraceContext::attach(&span, parent);
        let settings = self.options.settings(name);
        let own_deadline = start + settings.deadline;
        let context = match nested {
            Some(parent) => {
                CallContext { deadline: parent.deadline.min(own_deadline), trace, ..parent }
            }
            None => CallContext { depth: 0, deadline: own_deadline, trace },
        };
        self.invoke_deployment(deployment, settings, call, context).instrument(span).await
    }

    async fn invoke_deployment(
        self: &Arc<Self>,
        deployment: Arc<Deployment>,
        settings: &ComponentSettings,
        call: Call<'_>,
        context: CallContext,
    ) -> Result<(Answer, Arc<Deployment>), InvokeFailure> {
        let name = &*deployment.name;
        let permit = deployment
            .breaker
            .try_acquire()
            .map_err(|refused| InvokeFailure::CircuitOpen { retry_after: refused.retry_after })?;
        let _slot = match deployment.bulkhead.enter(context.deadline).await {
            Ok(slot) => slot,
            Err(failure) => {
                // Load, not a fault of the component: the breaker does not count it.
                deployment.breaker.release(permit);
                return Err(failure);
            }
        };
        let _in_flight = InFlight::enter(&deployment.metrics);
        let fault = self.faults.load().get(name).copied();
        let mut outcome = match fault {
            None => self.run(&deployment, settings, &call, context).await,
            Some(fault) => self.run_with_fault(fault, &deployment, settings, &call, context).await,
        };
        let mut retries = 0;
        while let Err(Rerun::Conflict { error, retryable }) = &outcome {
            if !retryable || retries == CONFLICT_RETRIES || Instant::now() >= context.deadline {
                outcome = Ok(Answer::Conflict(error.clone()));
                break;
            }
            retries += 1;
            tracing::debug!(component = name, retries, %error, "commit conflict; running again");
            outcome = self.run(&deployment, settings, &call, context).await;
        }
        let outcome = outcome.map_err(|rerun| match rerun {
            Rerun::Failed(failure) => failure,
            Rerun::Conflict { .. } => unreachable!("conflicts end in a response above"),
        });
        // A handler that returns `err` is the application saying "not now";
        // only traps, deadlines and 5xx answers are the component failing,
        // except 507: a full keyspace (the SDK's answer to `quota-exceeded`)
        // is not a broken component, and its reads still work.
        let healthy = match &outcome {
            Ok(Answer::Http(response)) => response.status < 500 || response.status == 507,
            // Losing a race to other writers is not the component failing.
            Ok(Answer::Event(_) | Answer::Conflict(_)) => true,
            Err(_) => false,
        };
        deployment.breaker.record(permit, healthy);
        outcome.map(|answer| (answer, deployment))
    }

    async fn run_with_fault(
        self: &Arc<Self>,
        fault: Fault,
        deployment: &Arc<Deployment>,
        settings: &ComponentSettings,
        call: &Call<'_>,
        context: CallContext,
    ) -> Result<Answer, Rerun> {
        let deadline_ms =
            context.deadline.saturating_duration_since(Instant::now()).as_millis() as u64;
        match fault {
            Fault::Trap => Err(Rerun::Failed(InvokeFailure::Trapped("injected fault".into()))),
            Fault::Timeout => {
                tokio::time::sleep_until(context.deadline).await;
                Err(Rerun::Failed(InvokeFailure::Timeout { deadline_ms }))
            }
            Fault::Unavailable => {
                Err(Rerun::Failed(InvokeFailure::Unavailable("injected fault".into())))
            }
            Fault::Delay(delay) => {
                tokio::time::sleep(delay).await;
                self.run(deployment, settings, call, context).await
            }
        }
    }

    /// A store for one invocation of `component`, with its limits and deadline.
    #[allow(clippy::too_many_arguments)]
    fn new_store(
        self: &Arc<Self>,
        component: Arc<str>,
        keyspace: &sled::Tree,
        usage: Arc<Usage>,
        topics: Arc<Topics>,
        metrics: Arc<ComponentMetrics>,
        settings: &ComponentSettings,
        call: CallContext,
        turn: Turn,
    ) -> Store<ComponentState> {
        // Generous for any real component (a wasip1 build with its adapter
        // has a handful of instances, memories and tables), tight enough that
        // a hostile one cannot make the host allocate without bound.
        let limits = StoreLimitsBuilder::new()
            .memory_size(settings.max_memory)
            .instances(64)
            .memories(64)
            .tables(64)
            .table_elements(1 << 20)
            .trap_on_grow_failure(true)
            .build();
        let output =
            OutputBudget::new(component.clone(), settings.output, metrics.log_dropped.clone());
        let state = ComponentState::new(
            output,
            KeyvalueCtx::new(keyspace.clone(), usage, settings.max_write_set_bytes, metrics),
            ServicesCtx::new(self.clone(), component, call, turn),
            BusCtx::new(topics, call.trace),
            limits,
        );
        let mut store = Store::new(&self.engine, state);
        if self.options.store_limits {
            store.limiter(|state| &mut state.limits);
        }
        if self.options.engine.epoch_interruption {
            time_slice(&mut store, call.deadline);
        }
        store
    }

    async fn run(
        self: &Arc<Self>,
        deployment: &Arc<Deployment>,
        settings: &ComponentSettings,
        call: &Call<'_>,
        context: CallContext,
    ) -> Result<Answer, Rerun> {
        let name = &*deployment.name;
        let deadline = context.deadline;
        // What a 504 names: the request's deadline, or for a nested call
        // what was left of its caller's.
        let deadline_ms = match context.depth {
            0 => settings.deadline.as_millis() as u64,
            _ => deadline.saturating_duration_since(Instant::now()).as_millis() as u64,
        };
        // The wait for a turn counts against the deadline like the run itself.
        let turn = deployment
            .turns
            .take(deadline)
            .await
            .map_err(|_| Rerun::Failed(InvokeFailure::Timeout { deadline_ms }))?;
        let mut store = self.new_store(
            deployment.name.clone(),
            &deployment.keyspace,
            deployment.usage.clone(),
            deployment.topics.clone(),
            deployment.metrics.clone(),
            settings,
            context,
            turn,
        );
        if let Call::Http(request) = call {
            store.data_mut().services.inherit_identity(&request.headers);
        }
        let run = async {
            let started = std::time::Instant::now();
            let instance = match deployment.pre.instantiate_async(&mut store).await {
                Ok(instance) => instance,
                Err(error) => return Err(instantiation_failure(name, error)),
            };
            deployment.metrics.instantiation.observe(started.elapsed().as_secs_f64());
            let answer = async {
                match call {
                    Call::Http(request) => {
                        let guest = deployment.handler.load(&mut store, &instance)?;
                        guest.call_handle(&mut store, request).await.map(Answer::Http)
                    }
                    Call::Event { event, .. } => {
                        let Some(indices) = &deployment.events else {
                            return Ok(Answer::Event(Err("the component takes no events".into())));
                        };
                        let guest = indices.load(&mut store, &instance)?;
                        guest.call_handle_event(&mut store, event).await.map(Answer::Event)
                    }
                }
            };
            answer
                .await
                .map_err(|error| guest_failure(name, error, deadline_ms, settings.max_memory))
        };
        let answer = match tokio::time::timeout_at(deadline, run).await {
            Err(_) => return Err(Rerun::Failed(InvokeFailure::Timeout { deadline_ms })),
            Ok(result) => result.map_err(Rerun::Failed)?,
        };
        let state = store.data_mut();
        // The guest is done: committing and flushing need no turn, and
        // holding it would keep the component's next instance waiting on
        // the disk (and defeat the group commit).
        state.services.end_turn();
        if !answer.succeeded() {
            // A failed invocation leaves no trace: its writes and events go.
            return Ok(answer);
        }
        let effects = Effects {
            writes: state.kv.take_writes(),
            events: state.bus.take_outgoing(),
            handled: match call {
                Call::Event { queue_key, .. } => Some(queue_key.clone()),
                Call::Http(_) => None,
            },
        };
        let retryable = !state.services.made_calls();
        match commit(&self.bus, &self.metrics, deployment, effects) {
            Ok(false) => {}
            // An event handler's commit is not flushed: nobody waits on it,
            // and if a crash loses it, it loses the handled mark with it,
            // so the event is delivered again. sled flushes within 500 ms
            // anyway.
            Ok(true) if matches!(call, Call::Event { .. }) => {}
            Ok(true) => {
                // A success answer promises the writes survive a crash.
                self.flush().await.map_err(|e| {
                    Rerun::Failed(InvokeFailure::Internal(format!("flushing storage: {e}")))
                })?;
            }
            // Someone else handled the event meanwhile (a replay raced it):
            // there is nothing left to do for it.
            Err(CommitError::AlreadyHandled) => {}
            Err(error @ (CommitError::Conflict(_) | CommitError::QuotaExceeded(_))) => {
                return Err(Rerun::Conflict { error: error.to_string(), retryable });
            }
            Err(error) => return Err(Rerun::Failed(InvokeFailure::Internal(error.to_string()))),
        }
        Ok(answer)
    }

    /// Compile `bytes`, check and pre-link them, and make them the active
    /// version of `name` (the next version number), bypassing the control
    /// plane: nothing is persisted and no route changes. For the test
    /// runner, the test harness and benchmarks; `pitstop serve` deploys
    /// through [`crate::deployments::Deployments`].
    pub async fn activate_unrecorded(
        self: &Arc<Self>,
        name: &str,
        bytes: &[u8],
    ) -> anyhow::Result<Arc<Deployment>> {
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| anyhow::anyhow!("compiling {name}: {e:#}"))?;
        let keyspace = self.db.open_tree(keyspace_tree(name))?;
        let prepared = self.prepare(name, &component, &keyspace).await?;
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
        keyspace: sled::Tree,
    ) -> Arc<Deployment> {
        let settings = self.options.settings(name);
        let usage = self.usage(name, &keyspace);
        let metrics = Arc::new(self.metrics.component(name));
        self.metrics.breaker_reset(name);
        let observer = {
            let metrics = self.metrics.clone();
            let name = name.to_string();
            Arc::new(move |to| metrics.breaker(&name, to))
        };
        let name: Arc<str> = name.into();
        Arc::new(Deployment {
            usage,
            metrics,
            breaker: Breaker::new(name.clone(), settings.breaker, Arc::new(SystemClock))
                .on_transition(observer),
            bulkhead: Bulkhead::new(settings.max_concurrency),
            turns: Turns::new(settings.max_parallel.unwrap_or(self.guests.threads() as u32)),
            name,
            version,
            digest,
            size,
            pre: prepared.pre,
            handler: prepared.handler,
            events: prepared.events,
            topics: prepared.topics,
            keyspace,
        })
    }

    /// The keyspace usage of `name`, counted on first use.
    fn usage(&self, name: &str, keyspace: &sled::Tree) -> Arc<Usage> {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let limit = self.options.settings(name).max_keyspace_bytes;
        usage
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Usage::scan(keyspace, limit)))
            .clone()
    }

    /// Forget the usage count of a purged keyspace.
    pub fn forget_usage(&self, name: &str) {
        self.usage.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// Whether storage accepts a write and reads it back.
    pub fn check_storage(&self) -> Result<(), String> {
        let probe = || -> sled::Result<bool> {
            let tree = self.db.open_tree("pitstop/health")?;
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                .to_be_bytes();
            tree.insert("probe", &stamp)?;
            Ok(tree.get("probe")?.as_deref() == Some(&stamp[..]))
        };
        match probe() {
            Ok(true) => Ok(()),
            Ok(false) => Err("storage did not read back what it wrote".into()),
            Err(e) => Err(format!("storage failed: {e}")),
        }
    }
}

/// Counts an invocation in its component's in-flight gauge while alive,
/// however the invocation ends (a deadline drops it mid-way).
struct InFlight(Arc<ComponentMetrics>);

impl InFlight {
    fn enter(metrics: &Arc<ComponentMetrics>) -> Self {
        metrics.in_flight.inc();
        InFlight(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Why [`Runtime::run`] has no answer to give.
enum Rerun {
    /// The invocation failed.
    Failed(InvokeFailure),
    /// It succeeded but lost a race at commit; `retryable` when running it
    /// again repeats nothing another component already did.
    Conflict { error: String, retryable: bool },
}

/// The answer to a request whose commit kept conflicting: 409, nothing saved.
fn conflict_response(error: &str) -> Response {
    Response {
        status: 409,
        headers: vec![Header { name: "content-type".into(), value: "application/json".into() }],
        body: serde_json::to_vec(&serde_json::json!({ "error": error }))
            .expect("serialising a value to JSON cannot fail"),
    }
}

/// Epoch ticks covering `remaining`, plus one for the tick in progress.
pub(crate) fn ticks(remaining: Duration) -> u64 {
    (remaining.as_nanos() / EPOCH_TICK.as_nanos()) as u64 + 1
}

/// The guest failed while handling the call: a trap, the deadline, or a
/// resource limit. All of them are the component's fault.
fn guest_failure(
    component: &str,
    error: wasmtime::Error,
    deadline_ms: u64,
    max_memory: usize,
) -> InvokeFailure {
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return InvokeFailure::Timeout { deadline_ms };
    }
    tracing::warn!(component, error = format!("{error:?}"), "guest trapped");
    let message = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        // The store limiter refuses growth with an error of its own.
        // (wasmtime: "forcing trap when growing memory to N bytes")
        None if error.root_cause().to_string().contains("growing memory") => {
            let cause = error.root_cause().to_string();
            let wanted = cause.split_whitespace().rev().nth(1).unwrap_or("more");
            format!("memory limit of {max_memory} bytes exceeded (growing to {wanted} bytes)")
        }
        None => error.root_cause().to_string(),
    };
    InvokeFailure::Trapped(message)
}

/// Instantiation failed: the pool is exhausted (try again), or something is
/// wrong on the platform's side.
fn instantiation_failure(component: &str, error: wasmtime::Error) -> InvokeFailure {
    if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        return InvokeFailure::Unavailable(error.to_string());
    }
    if error.downcast_ref::<Trap>().is_some() {
        // A trap in the component's start function.
        return guest_failure(component, error, 0, 0);
    }
    tracing::warn!(component, error = format!("{error:?}"), "instantiation failed");
    InvokeFailure::Internal(error.root_cause().to_string())
}

/// What every keyspace tree's name starts with.
pub const KEYSPACE_PREFIX: &str = "kv/";

/// The sled tree holding `component`'s keyspace.
pub fn keyspace_tree(component: &str) -> String {
    format!("{KEYSPACE_PREFIX}{component}")
}

/// The wasm magic number followed by the component-model layer (1), as
/// opposed to a core module (layer 0).
pub fn looks_like_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}
