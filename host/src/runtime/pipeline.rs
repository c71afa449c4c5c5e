//! One call, from whoever makes it (the gateway, a `services` call, the
//! dispatcher) to an answer: its span, its deadline, the breaker, the
//! bulkhead, an injected fault, and reruns after a lost commit race. The run
//! of one instance is [`crate::runtime::instance`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use pitstop_gateway::TraceContext;
use tokio::time::Instant;
use tracing::Instrument;

use crate::bindings::events;
use crate::bindings::services::CallError;
use crate::bindings::types::{Header, Response};
use crate::capabilities::bus::Topics;
use crate::events::dispatch::{Delivering, Delivery, Subscriber, Subscribers};
use crate::events::queue::QueuedEvent;
use crate::invoke::{CallContext, Invoke, InvokeFailure};
use crate::metrics::ComponentMetrics;
use crate::runtime::call::{Call, EventCall, RequestCall};
use crate::runtime::idempotency::Keep;
use crate::runtime::instance::Rerun;
use crate::runtime::registry::Deployment;
use crate::runtime::scheduling::ANSWER_GRACE;
use crate::runtime::{ComponentSettings, Runtime};

/// Reruns after which an invocation that keeps losing its commit race
/// pauses a little before the next: writers on several hosts of a cluster
/// would otherwise collide in step.
const RERUNS_WITHOUT_PAUSE: u32 = 2;

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
        request: http::Request<Bytes>,
        context: CallContext,
    ) -> Pin<Box<dyn Future<Output = Result<Response, CallError>> + Send>> {
        Box::pin(async move {
            match self.invoke(&name, request, Some(context)).await {
                Ok(invoked) => Ok(invoked.response),
                Err(failure) => Err(call_error(name, failure)),
            }
        })
    }
}

/// Why a `services` call to `callee` failed, as the calling guest is told.
fn call_error(callee: String, failure: InvokeFailure) -> CallError {
    match failure {
        InvokeFailure::NotDeployed => CallError::NotFound(callee),
        InvokeFailure::Timeout { .. } => CallError::Timeout,
        InvokeFailure::Trapped(message) => CallError::Trapped(message),
        InvokeFailure::Unavailable(reason) => CallError::Unavailable(reason),
        open @ InvokeFailure::CircuitOpen { .. } => CallError::Unavailable(open.to_string()),
        InvokeFailure::Internal(message) | InvokeFailure::InsufficientStorage(message) => {
            CallError::Unavailable(message)
        }
    }
}

impl Runtime {
    /// Run `request` on the active version of `name` in a fresh instance,
    /// on the caller's own executor. `nested` is set for a `services` call:
    /// its depth, and the caller's deadline, which this invocation may not
    /// outlive. The gateway uses [`Runtime::invoke_traced`] instead.
    pub async fn invoke(
        self: &Arc<Self>,
        name: &str,
        request: http::Request<Bytes>,
        nested: Option<CallContext>,
    ) -> Result<Invoked, InvokeFailure> {
        let parent = nested.map(|n| n.trace);
        self.invoke_in_trace(name, &request, nested, parent, Instant::now(), None).await
    }

    /// Run a request from the gateway on the guest pool, as a child of the
    /// gateway's span. Its deadline counts from when the gateway had read
    /// the request head, and it is answered by then (plus
    /// [`ANSWER_GRACE`]) however busy the pool is. A write sent with an
    /// `Idempotency-Key` runs once ([`crate::runtime::idempotency`]).
    pub async fn invoke_traced(
        self: &Arc<Self>,
        name: &str,
        request: pitstop_gateway::Request,
    ) -> Result<Invoked, InvokeFailure> {
        let pitstop_gateway::Request { http: request, trace, received } = request;
        let received = Instant::from_std(received);
        let deadline = self.options.settings(name).deadline;
        let runtime = self.clone();
        let owned = name.to_string();
        let task = self
            .guests
            .spawn(async move { runtime.invoke_keeping(&owned, request, trace, received).await });
        task.until(received + deadline + ANSWER_GRACE)
            .await
            .unwrap_or(Err(InvokeFailure::Timeout { deadline_ms: deadline.as_millis() as u64 }))
    }

    pub(super) async fn invoke_in_trace(
        self: &Arc<Self>,
        name: &str,
        request: &http::Request<Bytes>,
        nested: Option<CallContext>,
        parent: Option<TraceContext>,
        start: Instant,
        keep: Option<&Keep>,
    ) -> Result<Invoked, InvokeFailure> {
        let call = RequestCall { request, keep };
        let (settled, deployment) = self.invoke_call(name, &call, nested, parent, start).await?;
        let response = match settled {
            Settled::Answered(response) => response,
            Settled::Conflict(error) => conflict_response(&error),
        };
        Ok(Invoked { response, deployment })
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
        let call = EventCall {
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
        match self.invoke_call(subscriber, &call, None, event.trace(), start).await {
            Ok((Settled::Answered(Ok(())), _)) => Delivery::Handled,
            Ok((Settled::Answered(Err(error)), _)) => Delivery::Failed(format!("handler: {error}")),
            Ok((Settled::Conflict(error), _)) => Delivery::Failed(error),
            Err(InvokeFailure::CircuitOpen { retry_after }) => Delivery::NotNow(retry_after),
            // Also a disk below its watermark: the event waits, unspent,
            // until space returns.
            Err(
                InvokeFailure::NotDeployed
                | InvokeFailure::Unavailable(_)
                | InvokeFailure::InsufficientStorage(_),
            ) => Delivery::NotNow(Duration::from_millis(500)),
            Err(failure) => Delivery::Failed(failure.to_string()),
        }
    }

    /// One invocation in its own span, a child of `parent`: the caller's
    /// span, the gateway's, or (for an event) the publisher's.
    async fn invoke_call<C: Call>(
        self: &Arc<Self>,
        name: &str,
        call: &C,
        nested: Option<CallContext>,
        parent: Option<TraceContext>,
        start: Instant,
    ) -> Result<(Settled<C::Answer>, Arc<Deployment>), InvokeFailure> {
        let deployment = call.choose(&self.registry, name).ok_or(InvokeFailure::NotDeployed)?;
        let span = call.span(name, deployment.version);
        let trace = TraceContext::attach(&span, parent);
        let settings = self.options.settings(name);
        let own_deadline = start + settings.deadline;
        let context = match nested {
            Some(parent) => {
                CallContext { deadline: parent.deadline.min(own_deadline), trace, ..parent }
            }
            None => CallContext { depth: 0, deadline: own_deadline, trace },
        };
        let chosen = deployment.version;
        let outcome = self
            .invoke_deployment(deployment, settings, call, context, start)
            .instrument(span.clone())
            .await;
        match outcome {
            // A canary whose circuit refused a request (half-open, its
            // probe out): its share goes to the active version, as while it
            // is open. Looked up only then: the common path pays nothing.
            Err(open @ InvokeFailure::CircuitOpen { .. }) if C::REQUEST => {
                match self.registry.get(name).filter(|active| active.version != chosen) {
                    Some(active) => {
                        self.invoke_deployment(active, settings, call, context, start)
                            .instrument(span)
                            .await
                    }
                    None => Err(open),
                }
            }
            outcome => outcome,
        }
    }

    async fn invoke_deployment<C: Call>(
        self: &Arc<Self>,
        deployment: Arc<Deployment>,
        settings: &ComponentSettings,
        call: &C,
        context: CallContext,
        start: Instant,
    ) -> Result<(Settled<C::Answer>, Arc<Deployment>), InvokeFailure> {
        let permit = deployment.breaker.try_acquire().map_err(|refused| {
            // Not run, so not a failure of this version: counted apart, or a
            // client that opened the breaker would make this version look
            // as bad as it likes to a canary's judge.
            if C::REQUEST {
                deployment.traffic.refused();
            }
            InvokeFailure::CircuitOpen { retry_after: refused.retry_after }
        })?;
        let _slot = match deployment.bulkhead.enter(context.deadline).await {
            Ok(slot) => slot,
            Err(failure) => {
                // Load, not a fault of the component: the breaker does not count it.
                deployment.breaker.release(permit);
                return Err(failure);
            }
        };
        let _in_flight = InFlight::enter(&deployment.metrics);
        let started = Instant::now();
        // What the deadline left this version, of what the call was
        // allotted from its `start` (for a request, the head's arrival): the
        // client's upload of the body, or the wait for the pool and the
        // bulkhead, may have taken most of it.
        let allotted = context.deadline.saturating_duration_since(start);
        let given = context.deadline.saturating_duration_since(started);
        let outcome = self.run_to_commit(&deployment, settings, call, context).await;
        let healthy = match &outcome {
            Ok(Settled::Answered(answer)) => C::healthy(answer),
            // Losing a race to other writers is not the component failing.
            Ok(Settled::Conflict(_)) => true,
            Err(_) => false,
        };
        // The platform's store unreachable (a cluster's NATS down) is not
        // the component failing: neither the breaker nor a canary's judge
        // counts it, so no breaker is open and no canary rolled back when
        // the store comes back. Nor is a disk below its watermark, nor a
        // deadline missed with less than half of it left to run in: a
        // client sending its body slowly spends the deadline (it counts
        // from the request head), and could otherwise open any breaker
        // with a few slow uploads.
        let short_of_time =
            given < allotted / 2 && matches!(outcome, Err(InvokeFailure::Timeout { .. }));
        let not_its_doing = matches!(
            outcome,
            Err(InvokeFailure::Unavailable(_) | InvokeFailure::InsufficientStorage(_))
        ) || short_of_time;
        if not_its_doing {
            deployment.breaker.release(permit);
        } else {
            deployment.breaker.record(permit, healthy);
        }
        if C::REQUEST && !not_its_doing {
            deployment.traffic.record(healthy, started.elapsed());
        }
        outcome.map(|settled| (settled, deployment))
    }

    /// Run `call` (after any injected fault) until its commit lands, or
    /// until running it again could repeat what another component did, or
    /// until the deadline.
    async fn run_to_commit<C: Call>(
        self: &Arc<Self>,
        deployment: &Arc<Deployment>,
        settings: &ComponentSettings,
        call: &C,
        context: CallContext,
    ) -> Result<Settled<C::Answer>, InvokeFailure> {
        let name = &*deployment.name;
        if let Some(fault) = self.faults.load().get(name).copied() {
            fault.strike(context.deadline).await?;
        }
        let mut reruns = 0;
        loop {
            let (error, retryable) = match self.run(deployment, settings, call, context).await {
                Ok(answer) => return Ok(Settled::Answered(answer)),
                Err(Rerun::Failed(failure)) => return Err(failure),
                Err(Rerun::Conflict { error, retryable }) => (error, retryable),
            };
            // Run again from scratch (it reads what the winner wrote) until
            // the deadline, when it made no calls that could not be undone.
            if !retryable || Instant::now() >= context.deadline {
                return Ok(Settled::Conflict(error));
            }
            reruns += 1;
            if reruns > RERUNS_WITHOUT_PAUSE {
                tokio::time::sleep(pause(reruns)).await;
            }
            tracing::debug!(component = name, reruns, %error, "commit conflict; running again");
        }
    }
}

/// How an invocation ended, when it ended with no failure.
enum Settled<A> {
    /// The guest answered, and what it did is committed.
    Answered(A),
    /// It answered, but its commit kept losing to concurrent writers (or
    /// could not be run again): nothing of it was saved. A request gets 409.
    Conflict(String),
}

/// The runtime, as the dispatcher sees it.
impl Subscribers for Arc<Runtime> {
    fn active(&self) -> Vec<(Arc<str>, Arc<Topics>)> {
        (self.registry.active().values())
            .map(|deployment| (deployment.name.clone(), deployment.topics.clone()))
            .collect()
    }

    fn subscriber(&self, name: &str) -> Option<Subscriber> {
        self.registry.get(name).map(|deployment| Subscriber {
            version: deployment.version,
            topics: deployment.topics.clone(),
            keyspace: deployment.keyspace.clone(),
        })
    }

    fn deliver<'a>(
        &'a self,
        name: &'a str,
        event: &'a QueuedEvent,
        queue_key: Vec<u8>,
    ) -> Delivering<'a> {
        Box::pin(Runtime::deliver(self, name, event, queue_key))
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

/// A random pause of up to 2^`reruns` ms (at most 64 ms) before a rerun.
fn pause(reruns: u32) -> Duration {
    let ceiling = 1u32 << reruns.min(6);
    Duration::from_millis(u64::from(getrandom::u32().unwrap_or(0) % ceiling))
}

/// The answer to a request whose commit kept conflicting: 409, nothing saved.
pub(super) fn conflict_response(error: &str) -> Response {
    Response {
        status: 409,
        headers: vec![Header { name: "content-type".into(), value: "application/json".into() }],
        body: serde_json::to_vec(&serde_json::json!({ "error": error }))
            .expect("serialising a value to JSON cannot fail"),
    }
}
