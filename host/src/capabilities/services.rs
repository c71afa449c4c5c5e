//! The `services` capability: a component calls another by name, in-process.
//!
//! A call is a full invocation of the callee (fresh instance, its own
//! keyspace) that inherits what is left of the caller's deadline and counts
//! one level deeper, so a chain of calls cannot outlive its first caller or
//! recurse without end.

use std::sync::Arc;

use pitstop_gateway::trace::TRACEPARENT;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::services::{self, CallError};
use crate::bindings::types::{Header, Request, Response};
use crate::invoke::{CallContext, Invoke, InvokeFailure};
use crate::resilience::turns::Turn;

/// The header naming the calling component on every `services` call.
pub const CALLER_HEADER: &str = "pitstop-caller";
/// What every header the platform sets starts with; neither clients nor
/// components may set one.
const PLATFORM_PREFIX: &str = "pitstop-";

/// Whether `name` is one of the platform's headers, in any case.
fn is_platform_header(name: &str) -> bool {
    name.get(..PLATFORM_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PLATFORM_PREFIX))
}

/// Per-invocation state of the capability.
pub struct ServicesCtx {
    /// Runs the callee: the runtime, in production.
    invoke: Arc<dyn Invoke>,
    caller: Arc<str>,
    call: CallContext,
    made_calls: bool,
    stubs: Option<Stubs>,
    turn: Turn,
    identity: Vec<Header>,
}

/// Stand-ins for other services, and the record of calls made, for a test
/// binary under `pitstop test-runner`.
#[derive(Default)]
pub struct Stubs {
    stubs: Vec<Stub>,
    calls: Vec<(String, Request)>,
}

struct Stub {
    name: String,
    method: String,
    prefix: String,
    reply: Result<Response, CallError>,
}

impl Stubs {
    /// Answer calls to `name` with `method` and a path under `prefix` by `reply`.
    pub fn add(
        &mut self,
        name: String,
        method: String,
        prefix: String,
        reply: Result<Response, CallError>,
    ) {
        self.stubs.retain(|s| !(s.name == name && s.method == method && s.prefix == prefix));
        self.stubs.push(Stub { name, method, prefix, reply });
    }

    /// Remove every stub and forget the calls recorded.
    pub fn clear(&mut self) {
        self.stubs.clear();
        self.calls.clear();
    }

    /// The calls made to `name`, oldest first.
    pub fn calls(&self, name: &str) -> Vec<Request> {
        self.calls.iter().filter(|(n, _)| n == name).map(|(_, r)| r.clone()).collect()
    }

    /// Record the call; the reply of the stub with the longest matching prefix.
    fn answer(&mut self, name: &str, request: &Request) -> Option<Result<Response, CallError>> {
        self.calls.push((name.to_string(), request.clone()));
        self.stubs
            .iter()
            .filter(|s| {
                s.name == name
                    && s.method.eq_ignore_ascii_case(&request.method)
                    && request.path.starts_with(&s.prefix)
            })
            .max_by_key(|s| s.prefix.len())
            .map(|s| s.reply.clone())
    }
}

impl ServicesCtx {
    /// Calls answered by `stubs` first (a test binary's context).
    pub fn with_stubs(mut self, stubs: Stubs) -> Self {
        self.stubs = Some(stubs);
        self
    }

    /// The stubs, for the `testing` capability.
    pub(crate) fn stubs(&mut self) -> &mut Stubs {
        self.stubs.get_or_insert_with(Stubs::default)
    }

    /// Whether the invocation called another service, whose effects running
    /// the invocation again would repeat.
    pub fn made_calls(&self) -> bool {
        self.made_calls
    }

    /// Calls made by `caller`, itself running at `call` and holding `turn`,
    /// which it gives up while it waits for a callee.
    pub fn new(invoke: Arc<dyn Invoke>, caller: Arc<str>, call: CallContext, turn: Turn) -> Self {
        ServicesCtx {
            invoke,
            caller,
            call,
            made_calls: false,
            stubs: None,
            turn,
            identity: Vec::new(),
        }
    }

    /// Calls made while serving a request with `headers` carry the identity
    /// the platform verified for it: its `pitstop-*` headers (the gateway's
    /// `pitstop-subject`, `pitstop-auth`, `pitstop-claims`, or those a
    /// caller passed on), but not its `pitstop-caller`, which names us.
    pub fn inherit_identity(&mut self, headers: &[Header]) {
        self.identity = headers
            .iter()
            .filter(|h| is_platform_header(&h.name) && !h.name.eq_ignore_ascii_case(CALLER_HEADER))
            .cloned()
            .collect();
    }

    /// The invocation no longer runs guest code: give its turn back.
    pub fn end_turn(&mut self) {
        self.turn = Turn::unlimited();
    }
}

/// Add the capability to `linker`.
///
/// Generic over the store's data, as wasmtime's own capability crates are:
/// `get` finds this capability's context in it, so this module need not
/// know the type that holds every context.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut ServicesCtx,
) -> wasmtime::Result<()> {
    services::add_to_linker::<T, HasSelf<ServicesCtx>>(linker, get)
}

impl services::Host for ServicesCtx {
    #[tracing::instrument(level = "debug", name = "services.call", skip_all, fields(callee = %name))]
    async fn call(&mut self, name: String, mut request: Request) -> Result<Response, CallError> {
        let max_depth = self.invoke.max_call_depth();
        if self.call.depth >= max_depth {
            return Err(CallError::Refused(format!(
                "call chain deeper than {max_depth} ({} -> {name})",
                self.caller
            )));
        }
        self.made_calls = true;
        // The callee may trust the platform's headers: the gateway strips
        // them from client requests, and here every one the caller set is
        // replaced by the platform's own: who calls, and on whose behalf
        // (the identity verified for the request the caller serves, so a
        // component can neither forge one nor lose it along a chain). The
        // trace context is the caller's span, as W3C has it for an
        // outgoing call.
        request
            .headers
            .retain(|h| !is_platform_header(&h.name) && !h.name.eq_ignore_ascii_case(TRACEPARENT));
        request.headers.push(Header { name: CALLER_HEADER.into(), value: self.caller.to_string() });
        request.headers.extend(self.identity.iter().cloned());
        request.headers.push(Header { name: TRACEPARENT.into(), value: self.call.trace.header() });
        if let Some(stubs) = &mut self.stubs
            && let Some(reply) = stubs.answer(&name, &request)
        {
            return reply;
        }
        let nested = CallContext { depth: self.call.depth + 1, ..self.call };
        tracing::debug!(
            caller = &*self.caller,
            callee = name,
            depth = nested.depth,
            "service call"
        );
        // The callee runs in this task; its turn is its own component's, and
        // ours goes to the next instance in line meanwhile.
        self.turn.pause();
        // Boxed: this future contains an invocation, which may contain this future.
        let invoked = self.invoke.clone().invoke_nested(name.clone(), request, nested).await;
        if self.turn.resume(self.call.deadline).await.is_err() {
            return Err(CallError::Timeout);
        }
        match invoked {
            Ok(response) => Ok(response),
            Err(failure) => Err(match failure {
                InvokeFailure::NotDeployed => CallError::NotFound(name),
                InvokeFailure::Timeout { .. } => CallError::Timeout,
                InvokeFailure::Trapped(message) => CallError::Trapped(message),
                InvokeFailure::Unavailable(reason) => CallError::Unavailable(reason),
                open @ InvokeFailure::CircuitOpen { .. } => {
                    CallError::Unavailable(open.to_string())
                }
                InvokeFailure::Internal(message) => CallError::Unavailable(message),
            }),
        }
    }
}

impl crate::bindings::types::Host for ServicesCtx {}
