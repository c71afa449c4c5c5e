//! One invocation's instance: its store with its limits and capabilities
//! (fresh, or a warm one's renewed, see [`crate::runtime::reuse`]), the
//! guest's run under the deadline, and the commit of what it did.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::component::Instance;
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap};

use crate::capabilities::http::Network;

use crate::capabilities::bus::{BusCtx, Topics};
use crate::capabilities::keyvalue::{KeyvalueCtx, Usage, WriteLimits};
use crate::capabilities::log::OutputBudget;
use crate::capabilities::services::ServicesCtx;
use crate::invoke::{CallContext, InvokeFailure};
use crate::metrics::ComponentMetrics;
use crate::resilience::connections::ComponentConnections;
use crate::resilience::memory::ComponentMemory;
use crate::resilience::turns::Turn;
use crate::runtime::call::Call;
use crate::runtime::commit::{CommitError, Effects, commit};
use crate::runtime::engine::EPOCH_TICK;
use crate::runtime::registry::Deployment;
use crate::runtime::reuse::{Warm, WarmPool};
use crate::runtime::scheduling::time_slice;
use crate::runtime::state::ComponentState;
use crate::runtime::{ComponentSettings, Runtime};
use crate::storage::{Keyspace, StorageError};

/// Whose invocation a store serves: what its capabilities are built from.
pub(super) struct Owner<'a> {
    pub(super) component: Arc<str>,
    pub(super) keyspace: &'a Arc<dyn Keyspace>,
    pub(super) usage: Arc<Usage>,
    pub(super) memory: Arc<ComponentMemory>,
    pub(super) connections: Arc<ComponentConnections>,
    pub(super) topics: Arc<Topics>,
    pub(super) metrics: Arc<ComponentMetrics>,
    pub(super) settings: &'a ComponentSettings,
}

impl<'a> Owner<'a> {
    /// An invocation of `deployment`.
    fn of(deployment: &'a Deployment, settings: &'a ComponentSettings) -> Self {
        Owner {
            component: deployment.name.clone(),
            keyspace: &deployment.keyspace,
            usage: deployment.usage.clone(),
            memory: deployment.memory.clone(),
            connections: deployment.connections.clone(),
            topics: deployment.topics.clone(),
            metrics: deployment.metrics.clone(),
            settings,
        }
    }
}

/// The contexts of one invocation's capabilities.
struct Contexts {
    kv: KeyvalueCtx,
    services: ServicesCtx,
    bus: BusCtx,
}

/// Why [`Runtime::run`] has no answer to give.
pub(super) enum Rerun {
    /// The invocation failed.
    Failed(InvokeFailure),
    /// It succeeded but lost a race at commit; `retryable` when running it
    /// again repeats nothing another component already did.
    Conflict { error: String, retryable: bool },
}

impl Runtime {
    /// A store for one invocation of `owner`, with its limits and deadline.
    pub(super) fn new_store(
        self: &Arc<Self>,
        engine: &Engine,
        owner: Owner<'_>,
        call: CallContext,
        turn: Turn,
    ) -> Store<ComponentState> {
        let settings = owner.settings;
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
        let output = OutputBudget::new(
            owner.component.clone(),
            settings.output,
            owner.metrics.log_dropped.clone(),
        );
        let linear = owner.memory.empty();
        let network = Network {
            allowed: settings.allowed_outbound_hosts.clone(),
            io: self.outbound.handle(),
            connections: owner.connections.clone(),
        };
        let Contexts { kv, services, bus } = self.contexts(owner, call, turn);
        let state =
            ComponentState::new(output, kv, services, bus, limits, linear).allow_outbound(network);
        let mut store = Store::new(engine, state);
        if self.options.store_limits {
            store.limiter(|state| &mut state.limits);
        }
        if self.options.engine.epoch_interruption {
            time_slice(&mut store, call.deadline);
        }
        store
    }

    /// What belongs to one invocation, whichever instance runs it.
    fn contexts(self: &Arc<Self>, owner: Owner<'_>, call: CallContext, turn: Turn) -> Contexts {
        let Owner { component, keyspace, usage, memory, topics, metrics, settings, .. } = owner;
        let limits = WriteLimits {
            max_write_set: settings.max_write_set_bytes,
            max_result: settings.max_memory as u64,
        };
        let room = usage.room_for_events(&**keyspace, self.bus.backlog(&component));
        let services = ServicesCtx::new(self.clone(), component, call, turn, memory.clone());
        Contexts {
            kv: KeyvalueCtx::new(keyspace.clone(), usage, limits, memory.clone(), metrics)
                .waiting_as(services.caller()),
            services,
            bus: BusCtx::new(topics, call.trace, memory).with_room(room),
        }
    }

    /// A store and maybe an instance for an invocation of `deployment`: a
    /// warm one when the component reuses instances and one is idle, else
    /// a fresh store (its instance is made under the deadline).
    fn store_for(
        self: &Arc<Self>,
        deployment: &Deployment,
        settings: &ComponentSettings,
        call: CallContext,
        turn: Turn,
    ) -> (Store<ComponentState>, Option<Instance>, u32) {
        let Some(Warm { mut store, instance, served }) =
            deployment.warm.as_ref().and_then(WarmPool::take)
        else {
            let owner = Owner::of(deployment, settings);
            let store = self.new_store(deployment.pre.engine(), owner, call, turn);
            return (store, None, 0);
        };
        let Contexts { kv, services, bus } =
            self.contexts(Owner::of(deployment, settings), call, turn);
        store.data_mut().begin(kv, services, bus);
        if self.options.engine.epoch_interruption {
            time_slice(&mut store, call.deadline);
        }
        (store, Some(instance), served)
    }

    /// Run `call` in one instance of `deployment`, within `context`'s
    /// deadline, and commit what it did if it succeeded.
    pub(super) async fn run<C: Call>(
        self: &Arc<Self>,
        deployment: &Arc<Deployment>,
        settings: &ComponentSettings,
        call: &C,
        context: CallContext,
    ) -> Result<C::Answer, Rerun> {
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
        let (mut store, warm, served) = self.store_for(deployment, settings, context, turn);
        call.begin(store.data_mut());
        let run = async {
            let instance = match warm {
                Some(instance) => instance,
                None => {
                    let started = std::time::Instant::now();
                    match deployment.pre.instantiate_async(&mut store).await {
                        Ok(instance) => {
                            let took = started.elapsed().as_secs_f64();
                            deployment.metrics.instantiation.observe(took);
                            instance
                        }
                        Err(error) => return Err(instantiation_failure(name, error)),
                    }
                }
            };
            let limit = self.options.max_response_body;
            let answer = call
                .answer(deployment, limit, &mut store, &instance)
                .await
                .map_err(|error| guest_failure(name, error, deadline_ms, settings.max_memory))?;
            Ok((answer, instance))
        };
        let outcome = tokio::time::timeout_at(deadline, run).await;
        call.ran(store.data().services.made_calls());
        // Its keyspace could not be read (a cluster's NATS is down): not
        // the guest's fault, whatever it made of the error (an answer, a
        // trap, waiting out its deadline); try again later.
        if let Some(why) = store.data().kv.unreachable() {
            return Err(Rerun::Failed(InvokeFailure::Unavailable(why.to_string())));
        }
        let (answer, instance) = match outcome {
            Err(_) => return Err(Rerun::Failed(InvokeFailure::Timeout { deadline_ms })),
            Ok(result) => result.map_err(Rerun::Failed)?,
        };
        let state = store.data_mut();
        // The guest is done: committing and flushing need no turn, and
        // holding it would keep the component's next instance waiting on
        // the disk (and defeat the group commit).
        state.services.end_turn();
        // Its outgoing connections close with it, a reused instance's too.
        state.close_connections();
        if !C::succeeded(&answer) {
            // A failed invocation leaves no trace: its writes and events go.
            return Ok(answer);
        }
        let (handled, kept) = call.marks(&answer);
        let effects = Effects {
            held: Some((state.kv.take_held(), state.bus.take_charge())),
            writes: state.kv.take_writes(),
            events: state.bus.take_outgoing(),
            handled,
            answer: kept,
        };
        let retryable = !state.services.made_calls();
        let committed = commit(&*self.bus, &self.metrics, deployment, effects);
        if let (Ok(_) | Err(CommitError::AlreadyHandled), Some(pool)) =
            (&committed, &deployment.warm)
        {
            // Done with this invocation: the next may have the instance
            // while this one waits for the disk.
            pool.put_back(Warm { store, instance, served });
        }
        if committed.is_ok() {
            call.committed();
        }
        match committed {
            Ok(false) => {}
            Ok(true) if !C::FLUSH => {}
            Ok(true) => {
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
            Err(CommitError::Storage(StorageError::Unavailable(why))) => {
                return Err(Rerun::Failed(InvokeFailure::Unavailable(why)));
            }
            Err(CommitError::Storage(StorageError::NoSpace(why))) => {
                return Err(Rerun::Failed(InvokeFailure::InsufficientStorage(why)));
            }
            Err(error) => return Err(Rerun::Failed(InvokeFailure::Internal(error.to_string()))),
        }
        Ok(answer)
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
