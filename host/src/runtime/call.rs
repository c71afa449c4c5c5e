//! What an invocation runs: a request ([`RequestCall`]) or an event
//! delivery ([`EventCall`]). The pipeline ([`crate::runtime::pipeline`])
//! and the run of one instance ([`crate::runtime::instance`]) are the same
//! for both; what differs is here, once: which version takes the call, its
//! span, how the guest is called, what its answer means to the breaker and
//! to the commit, and what the commit records besides the guest's effects.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::Instance;

use crate::bindings::events;
use crate::bindings::types::Response;
use crate::capabilities::services::{guest_request, header};
use crate::runtime::canary::CLIENT_KEY_HEADER;
use crate::runtime::idempotency::{Keep, KeptAnswer};
use crate::runtime::proxy;
use crate::runtime::registry::{Deployment, Entry, Registry};
use crate::runtime::state::ComponentState;

/// An invocation's kind. Each method is a point where a request and an
/// event delivery differ.
pub(super) trait Call: Sync {
    /// What the guest answers.
    type Answer: Send;

    /// A client's request: its outcome counts in a version's traffic (a
    /// canary's judge), and a canary whose circuit refuses it passes it on
    /// to the active version.
    const REQUEST: bool;

    /// Which version of `name` takes it.
    fn choose(&self, registry: &Registry, name: &str) -> Option<Arc<Deployment>>;

    /// Its span, as a child of whoever made the call.
    fn span(&self, name: &str, version: u64) -> tracing::Span;

    /// Before the guest runs in `state`.
    fn begin(&self, _state: &mut ComponentState) {}

    /// Call the guest's export in `instance`.
    fn answer<'a>(
        &'a self,
        deployment: &'a Deployment,
        max_response_body: usize,
        store: &'a mut Store<ComponentState>,
        instance: &'a Instance,
    ) -> impl Future<Output = wasmtime::Result<Self::Answer>> + Send + 'a;

    /// Whether what the guest did is committed.
    fn succeeded(answer: &Self::Answer) -> bool;

    /// Whether the answer shows the component working, for its breaker.
    fn healthy(answer: &Self::Answer) -> bool;

    /// What the commit records besides the guest's writes and events: the
    /// queue entry it handled, the answer it keeps.
    fn marks(&self, answer: &Self::Answer) -> (Option<Vec<u8>>, Option<KeptAnswer>);

    /// Whether the guest made calls that cannot be undone (known after
    /// each run, committed or not).
    fn ran(&self, _made_calls: bool) {}

    /// Its commit landed.
    fn committed(&self) {}

    /// Whether a landed commit is flushed before the answer goes out.
    const FLUSH: bool;
}

/// A request, from the gateway or a `services` call.
pub(super) struct RequestCall<'a> {
    pub(super) request: &'a http::Request<Bytes>,
    /// Set for a write sent with an `Idempotency-Key`: its answer is kept.
    pub(super) keep: Option<&'a Keep>,
}

impl Call for RequestCall<'_> {
    type Answer = Response;
    const REQUEST: bool = true;
    // A success answer promises the writes survive a crash.
    const FLUSH: bool = true;

    fn choose(&self, registry: &Registry, name: &str) -> Option<Arc<Deployment>> {
        // A request may go to a canary.
        registry.choose(name, || split_key(self.request))
    }

    fn span(&self, name: &str, version: u64) -> tracing::Span {
        tracing::info_span!(
            "invoke",
            component = %name,
            version,
            method = %self.request.method(),
            path = %self.request.uri().path(),
            trace_id = tracing::field::Empty,
        )
    }

    fn begin(&self, state: &mut ComponentState) {
        state.services.inherit_identity(self.request.headers());
    }

    async fn answer(
        &self,
        deployment: &Deployment,
        max_response_body: usize,
        store: &mut Store<ComponentState>,
        instance: &Instance,
    ) -> wasmtime::Result<Response> {
        match &deployment.entry {
            Entry::Service(indices) => {
                let guest = indices.load(&mut *store, instance)?;
                guest.call_handle(store, &guest_request(self.request)).await
            }
            Entry::Proxy(indices) => {
                let guest = indices.load(&mut *store, instance)?;
                proxy::call(store, &guest, self.request, max_response_body).await
            }
        }
    }

    fn succeeded(response: &Response) -> bool {
        response.status < 500
    }

    fn healthy(response: &Response) -> bool {
        // Only traps, deadlines and 5xx answers are the component failing,
        // except 507: a full keyspace (the SDK's answer to `quota-exceeded`)
        // is not a broken component, and its reads still work.
        response.status < 500 || response.status == 507
    }

    fn marks(&self, response: &Response) -> (Option<Vec<u8>>, Option<KeptAnswer>) {
        (None, self.keep.map(|keep| keep.kept_answer(response)))
    }

    fn ran(&self, made_calls: bool) {
        if let Some(keep) = self.keep {
            keep.note_calls(made_calls);
        }
    }

    fn committed(&self) {
        if let Some(keep) = self.keep {
            keep.mark_kept();
        }
    }
}

/// An event, delivered from its queue entry `queue_key`.
pub(super) struct EventCall {
    pub(super) event: events::Event,
    pub(super) queue_key: Vec<u8>,
}

impl Call for EventCall {
    /// `err` is the application saying "not now".
    type Answer = Result<(), String>;
    const REQUEST: bool = false;
    // Nobody waits on the commit, and if a crash loses it, it loses the
    // handled mark with it, so the event is delivered again. sled flushes
    // within 500 ms anyway.
    const FLUSH: bool = false;

    fn choose(&self, registry: &Registry, name: &str) -> Option<Arc<Deployment>> {
        // Events go to the active version.
        registry.get(name)
    }

    fn span(&self, name: &str, version: u64) -> tracing::Span {
        tracing::info_span!(
            "deliver",
            component = %name,
            version,
            topic = %self.event.topic,
            event = %self.event.id,
            attempt = self.event.attempt,
            trace_id = tracing::field::Empty,
        )
    }

    async fn answer(
        &self,
        deployment: &Deployment,
        _max_response_body: usize,
        store: &mut Store<ComponentState>,
        instance: &Instance,
    ) -> wasmtime::Result<Self::Answer> {
        let Some(indices) = &deployment.events else {
            return Ok(Err("the component takes no events".into()));
        };
        let guest = indices.load(&mut *store, instance)?;
        guest.call_handle_event(store, &self.event).await
    }

    fn succeeded(answer: &Self::Answer) -> bool {
        answer.is_ok()
    }

    fn healthy(_answer: &Self::Answer) -> bool {
        // A handler that returns `err` is the application saying "not now".
        true
    }

    fn marks(&self, _answer: &Self::Answer) -> (Option<Vec<u8>>, Option<KeptAnswer>) {
        (Some(self.queue_key.clone()), None)
    }
}

/// What keeps a request on one side of a canary split: the verified
/// subject, else the client's own key.
fn split_key(request: &http::Request<Bytes>) -> Option<&str> {
    let header = |name: &str| header(request, name).filter(|v| !v.is_empty());
    header(pitstop_gateway::auth::SUBJECT_HEADER).or_else(|| header(CLIENT_KEY_HEADER))
}
