//! One call, from whoever makes it (the gateway, a `services` call, the
//! dispatcher) to an answer: its span, its deadline, the breaker, the
//! bulkhead, an injected fault, and reruns after a lost commit race. The run
//! of one instance is [`crate::runtime::instance`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pitstop_gateway::TraceContext;
use tokio::time::Instant;
use tracing::Instrument;

use crate::bindings::events;
use crate::bindings::services::CallError;
use crate::bindings::types::{Header, Request, Response};
use crate::capabilities::bus::Topics;
use crate::events::dispatch::{Delivering, Delivery, Subscriber, Subscribers};
use crate::events::queue::QueuedEvent;
use crate::invoke::{CallContext, Invoke, InvokeFailure};
use crate::metrics::ComponentMetrics;
use crate::runtime::canary::CLIENT_KEY_HEADER;
use crate::runtime::idempotency::Keep;
use crate::runtime::instance::{Answer, Call, Rerun};
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
        request: Request,
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
        request: Request,
        nested: Option<CallContext>,
    ) -> Result<Invoked, InvokeFailure> {
        let parent = nested.map(|n| n.trace);
        self.invoke_in_trace(name, request, nested, parent, Instant::now(), None).await
    }

    /// Run a request from the gateway on the guest pool, as a child of the
    /// span `parent`. Its deadline counts from `received`, when the gateway
    /// had read the request head, and it is answered by then (plus
    /// [`ANSWER_GRACE`]) however busy the pool is. A write sent with an
    /// `Idempotency-Key` runs once ([`crate::runtime::idempotency`]).
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
        let task = self
            .guests
            .spawn(async move { runtime.invoke_keeping(&owned, request, parent, received).await });
        task.until(received + deadline + ANSWER_GRACE)
            .await
            .unwrap_or(Err(InvokeFailure::Timeout { deadline_ms: deadline.as_millis() as u64 }))
    }

    pub(super) async fn invoke_in_trace(
        self: &Arc<Self>,
        name: &str,
        request: Request,
        nested: Option<CallContext>,
        parent: Option<TraceContext>,
        start: Instant,
        keep: Option<&Keep>,
    ) -> Result<Invoked, InvokeFailure> {
        let (answer, deployment) =
            self.invoke_call(name, Call::Http(&request), nested, parent, start, keep).await?;
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
        match self.invoke_call(subscriber, call, None, event.trace(), start, None).await {
            Ok((Answer::Event(Ok(())), _)) => Delivery::Handled,
            Ok((Answer::Event(Err(error)), _)) => Delivery::Failed(format!("handler: {error}")),
            Ok((Answer::Conflict(error), _)) => Delivery::Failed(error),
            // An event call runs `handle-event`; were that ever to change,
            // fail the delivery rather than the dispatcher.
            Ok((Answer::Http(response), _)) => {
                Delivery::Failed(format!("answered HTTP {} to an event", response.status))
            }
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
    async fn invoke_call(
        self: &Arc<Self>,
        name: &str,
        call: Call<'_>,
        nested: Option<CallContext>,
        parent: Option<TraceContext>,
        start: Instant,
        keep: Option<&Keep>,
    ) -> Result<(Answer, Arc<Deployment>), InvokeFailure> {
        let deployment = match &call {
            // A request may go to a canary; an event to the active version.
            Call::Http(request) => self.registry.choose(name, || split_key(request)),
            Call::Event { .. } => self.registry.get(name),
        };
        let deployment = deployment.ok_or(InvokeFailure::NotDeployed)?;
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
        let request = match &call {
            Call::Http(request) => Some(*request),
            Call::Event { .. } => None,
        };
        let chosen = deployment.version;
        let outcome = self
            .invoke_deployment(deployment, settings, call, context, start, keep)
            .instrument(span.clone())
            .await;
        match (outcome, request) {
            // A canary whose circuit refused (half-open, its probe out):
            // its share goes to the active version, as while it is open.
            // Looked up only then: the common path pays nothing for it.
            (Err(open @ InvokeFailure::CircuitOpen { .. }), Some(request)) => {
                match self.registry.get(name).filter(|active| active.version != chosen) {
                    Some(active) => {
                        self.invoke_deployment(
                            active,
                            settings,
                            Call::Http(request),
                            context,
                            start,
                            keep,
                        )
                        .instrument(span)
                        .await
                    }
                    None => Err(open),
                }
            }
            (outcome, _) => outcome,
        }
    }

    async fn invoke_deployment(
        self: &Arc<Self>,
        deployment: Arc<Deployment>,
        settings: &ComponentSettings,
        call: Call<'_>,
        context: CallContext,
        start: Instant,
        keep: Option<&Keep>,
    ) -> Result<(Answer, Arc<Deployment>), InvokeFailure> {
        let name = &*deployment.name;
        let permit = deployment.breaker.try_acquire().map_err(|refused| {
            // Not run, so not a failure of this version: counted apart, or a
            // client that opened the breaker would make this version look
            // as bad as it likes to a canary's judge.
            if matches!(call, Call::Http(_)) {
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
        let fault = self.faults.load().get(name).copied();
        let struck = match fault {
            Some(fault) => fault.strike(context.deadline).await,
            None => Ok(()),
        };
        let mut outcome = match struck {
            Ok(()) => self.run(&deployment, settings, &call, context, keep).await,
            Err(failure) => Err(Rerun::Failed(failure)),
        };
        let mut retries = 0;
        while let Err(Rerun::Conflict { error, retryable }) = &outcome {
            // Run again from scratch (it reads what the winner wrote) until
            // the deadline, when it made no calls that could not be undone.
            if !retryable || Instant::now() >= context.deadline {
                outcome = Ok(Answer::Conflict(error.clone()));
                break;
            }
            retries += 1;
            if retries > RERUNS_WITHOUT_PAUSE {
                tokio::time::sleep(pause(retries)).await;
            }
            tracing::debug!(component = name, retries, %error, "commit conflict; running again");
            outcome = self.run(&deployment, settings, &call, context, keep).await;
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
        if matches!(call, Call::Http(_)) && !not_its_doing {
            deployment.traffic.record(healthy, started.elapsed());
        }
        outcome.map(|answer| (answer, deployment))
    }
}

/// What keeps a request on one side of a canary split: the verified
/// subject, else the client's own key.
fn split_key(request: &Request) -> Option<&str> {
    let header = |name: &str| {
        let found = request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name));
        found.map(|h| h.value.as_str()).filter(|v| !v.is_empty())
    };
    header(pitstop_gateway::auth::SUBJECT_HEADER).or_else(|| header(CLIENT_KEY_HEADER))
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
