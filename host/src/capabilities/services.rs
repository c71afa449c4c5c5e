//! The `services` capability: a component calls another by name, in-process.
//!
//! A call is a full invocation of the callee (fresh instance, its own
//! keyspace) that inherits what is left of the caller's deadline and counts
//! one level deeper, so a chain of calls cannot outlive its first caller or
//! recurse without end.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use pitstop_gateway::trace::TRACEPARENT;
use tokio::time::Instant;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::services::{self, CallError};
use crate::bindings::types::{Header, Request, Response};
use crate::invoke::{CallContext, Invoke};
use crate::resilience::memory::{Charge, ComponentMemory, MemoryRefused};
use crate::resilience::turns::{NoTurn, Turn};

/// The header naming the calling component on every `services` call.
pub const CALLER_HEADER: &str = "pitstop-caller";
/// The digest of a client's `Idempotency-Key` on the request it names
/// (`crate::runtime::idempotency`); not passed on to the calls made while
/// serving it.
pub const SCOPE_HEADER: &str = "pitstop-idempotency-key";
/// What every header the platform sets starts with; neither clients nor
/// components may set one (the gateway's own definition).
use pitstop_gateway::RESERVED_HEADER_PREFIX as PLATFORM_PREFIX;

/// Whether `name` is one of the platform's headers, in any case.
fn is_platform_header(name: &str) -> bool {
    name.get(..PLATFORM_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PLATFORM_PREFIX))
}

/// Per-invocation state of the capability: the invocation as a caller of
/// other components, which `wasi:http` requests to `NAME.svc` use too
/// ([`crate::capabilities::http`]).
pub struct ServicesCtx {
    caller: Caller,
}

/// The invocation making calls: shared by the `services` capability and
/// outgoing `wasi:http` requests, whose futures outlive a host call.
#[derive(Clone)]
pub struct Caller(Arc<CallerState>);

struct CallerState {
    /// Runs the callee: the runtime, in production; stubs in front of it
    /// under `pitstop test-runner`.
    invoke: Arc<dyn Invoke>,
    name: Arc<str>,
    call: CallContext,
    made_calls: AtomicBool,
    // Held only while a call gives the turn up and takes it back; a guest
    // makes one host call at a time, so nobody waits for this lock.
    turn: tokio::sync::Mutex<Turn>,
    identity: Mutex<Vec<(HeaderName, HeaderValue)>>,
    /// The caller's host memory: answers it has not read yet are charged.
    memory: Arc<ComponentMemory>,
}

impl ServicesCtx {
    /// Whether the invocation called another service, whose effects running
    /// the invocation again would repeat.
    pub fn made_calls(&self) -> bool {
        self.caller.0.made_calls.load(Ordering::SeqCst)
    }

    /// Calls made by `caller`, itself running at `call` and holding `turn`,
    /// which it gives up while it waits for a callee; what it holds of their
    /// answers is charged to `memory`.
    pub fn new(
        invoke: Arc<dyn Invoke>,
        caller: Arc<str>,
        call: CallContext,
        turn: Turn,
        memory: Arc<ComponentMemory>,
    ) -> Self {
        ServicesCtx {
            caller: Caller(Arc::new(CallerState {
                invoke,
                name: caller,
                call,
                made_calls: AtomicBool::new(false),
                turn: tokio::sync::Mutex::new(turn),
                identity: Mutex::default(),
                memory,
            })),
        }
    }

    /// The context of an instance between two invocations
    /// ([`crate::runtime::reuse`]): it holds no turn and no runtime, and
    /// refuses calls (nothing runs guest code until the next invocation
    /// brings its own context).
    pub fn parked(&self) -> Self {
        let this = &self.caller.0;
        let call = CallContext { deadline: Instant::now(), ..this.call };
        let memory = this.memory.clone();
        ServicesCtx::new(Arc::new(Parked), this.name.clone(), call, Turn::unlimited(), memory)
    }

    /// The invocation as a caller, for outgoing `wasi:http` requests.
    pub fn caller(&self) -> Caller {
        self.caller.clone()
    }

    /// The same, borrowed.
    pub fn caller_ref(&self) -> &Caller {
        &self.caller
    }

    /// Calls made while serving a request with `headers` carry the identity
    /// the platform verified for it: its `pitstop-*` headers (the gateway's
    /// `pitstop-subject`, `pitstop-auth`, `pitstop-claims`, or those a
    /// caller passed on), but not its `pitstop-caller`, which names us.
    pub fn inherit_identity(&mut self, headers: &HeaderMap) {
        *self.caller.0.identity.lock().unwrap_or_else(|p| p.into_inner()) = headers
            .iter()
            .filter(|(name, _)| is_platform_header(name.as_str()) && *name != CALLER_HEADER)
            // The client's key names the request it sent, not the calls
            // made to serve it.
            .filter(|(name, _)| *name != SCOPE_HEADER)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
    }

    /// The invocation no longer runs guest code: give its turn back. (An
    /// outgoing request the guest left running holds it until the store,
    /// and with it that request, is dropped.)
    pub fn end_turn(&mut self) {
        if let Ok(mut turn) = self.caller.0.turn.try_lock() {
            *turn = Turn::unlimited();
        }
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
    async fn call(&mut self, name: String, request: Request) -> Result<Response, CallError> {
        let request = host_request(request).map_err(CallError::Refused)?;
        self.caller.call(name, request).await
    }
}

impl Caller {
    /// Call component `name` with `request` while the guest waits in this
    /// host call: its turn at the CPU goes to the next in line meanwhile.
    pub async fn call(
        &self,
        name: String,
        request: http::Request<Bytes>,
    ) -> Result<Response, CallError> {
        self.while_blocked(self.send(name, request)).await.unwrap_or(Err(CallError::Timeout))
    }

    /// Call component `name` with `request`, one level deeper in the chain
    /// and within what is left of the deadline, as this invocation. The
    /// turn is left alone: for a `wasi:http` request, which runs beside a
    /// guest that may go on computing, and gives its turn up only when it
    /// blocks in `wasi:io/poll` ([`crate::capabilities::poll`]).
    pub async fn send(
        &self,
        name: String,
        mut request: http::Request<Bytes>,
    ) -> Result<Response, CallError> {
        let this = &self.0;
        let max_depth = this.invoke.max_call_depth();
        if this.call.depth >= max_depth {
            return Err(CallError::Refused(format!(
                "call chain deeper than {max_depth} ({} -> {name})",
                this.name
            )));
        }
        self.note_side_effect();
        // The callee may trust the platform's headers: the gateway strips
        // them from client requests, and here every one the caller set is
        // replaced by the platform's own: who calls, and on whose behalf
        // (the identity verified for the request the caller serves, so a
        // component can neither forge one nor lose it along a chain). The
        // trace context is the caller's span, as W3C has it for an
        // outgoing call.
        let headers = request.headers_mut();
        let ours: Vec<HeaderName> = (headers.keys())
            .filter(|name| is_platform_header(name.as_str()) || *name == TRACEPARENT)
            .cloned()
            .collect();
        for name in ours {
            headers.remove(name);
        }
        let caller =
            HeaderValue::try_from(&*this.name).expect("a component's name is a header value");
        headers.insert(CALLER_HEADER, caller);
        headers.extend(this.identity.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        let trace = HeaderValue::try_from(this.call.trace.header()).expect("hex is a header value");
        headers.insert(TRACEPARENT, trace);
        let nested = CallContext { depth: this.call.depth + 1, ..this.call };
        tracing::debug!(caller = &*this.name, callee = name, depth = nested.depth, "service call");
        // Boxed: this future contains an invocation, which may contain this future.
        this.invoke.clone().invoke_nested(name, request, nested).await
    }

    /// Await `work`, for which the guest is blocked: if it is not ready at
    /// once, the invocation's turn at the CPU goes to the next instance in
    /// line until it is, then is taken back. `Err` when the deadline passed
    /// before the turn came back.
    pub async fn while_blocked<F: Future>(&self, work: F) -> Result<F::Output, NoTurn> {
        let mut work = std::pin::pin!(work);
        let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
        if let Poll::Ready(done) = first {
            return Ok(done);
        }
        let this = &self.0;
        let mut turn = this.turn.lock().await;
        turn.pause();
        let done = work.await;
        turn.resume(this.call.deadline).await?;
        Ok(done)
    }

    /// `bytes` of the caller's host memory for `what`, until dropped.
    pub fn charge(&self, what: &'static str, bytes: u64) -> Result<Charge, MemoryRefused> {
        self.0.memory.charge(what, bytes)
    }

    /// When the whole call chain must have answered.
    pub fn deadline(&self) -> Instant {
        self.0.call.deadline
    }

    /// The invocation did something outside itself (called a service, sent
    /// a request): running it again would do it twice.
    pub fn note_side_effect(&self) {
        self.0.made_calls.store(true, Ordering::SeqCst);
    }
}

impl crate::bindings::types::Host for ServicesCtx {}

/// `request` as the platform world's `types.request`: the one conversion a
/// request to such a guest makes, where the guest's types are lowered.
/// Header values are text: the gateway lets no other through, and a
/// `services` call's are the calling guest's strings.
pub fn guest_request(request: &http::Request<Bytes>) -> Request {
    let uri = request.uri();
    Request {
        method: request.method().as_str().to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: (request.headers().iter())
            .map(|(name, value)| Header {
                name: name.as_str().to_string(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            })
            .collect(),
        body: request.body().to_vec(),
    }
}

/// The first value of `request`'s header `name` (lower-case), as text.
/// Not `HeaderValue::to_str`, which takes only ASCII: a verified subject
/// or claim may be any UTF-8.
pub fn header<'r>(request: &'r http::Request<Bytes>, name: &str) -> Option<&'r str> {
    std::str::from_utf8(request.headers().get(name)?.as_bytes()).ok()
}

/// A guest's `services` request as the host carries it: refused when its
/// method, path, query or a header is not what HTTP can carry (the callee
/// could not be sent it faithfully).
fn host_request(request: Request) -> Result<http::Request<Bytes>, String> {
    if !request.path.starts_with('/') {
        return Err(format!("the request's path {:?} does not start with '/'", request.path));
    }
    let target = match request.query.is_empty() {
        true => request.path,
        false => format!("{}?{}", request.path, request.query),
    };
    let mut builder = http::Request::builder().method(request.method.as_str()).uri(&target);
    for header in &request.headers {
        builder = builder.header(&header.name, &header.value);
    }
    builder.body(Bytes::from(request.body)).map_err(|error| {
        format!("the request ({} {target}) is not valid HTTP: {error}", request.method)
    })
}

/// Where a parked instance's calls would go: nowhere.
struct Parked;

impl Invoke for Parked {
    fn max_call_depth(&self) -> u32 {
        0
    }

    fn invoke_nested(
        self: Arc<Self>,
        _name: String,
        _request: http::Request<Bytes>,
        _context: CallContext,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Response, CallError>> + Send>> {
        Box::pin(async { Err(CallError::Refused("the invocation has ended".into())) })
    }
}

#[cfg(test)]
mod tests {
    use pitstop_gateway::auth::{AUTH_HEADER, CLAIMS_HEADER, ROLES_HEADER, SUBJECT_HEADER};

    use super::{CALLER_HEADER, SCOPE_HEADER, guest_request, host_request};
    use crate::bindings::types::{Header, Request};

    fn request(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "POST".into(),
            path: "/users/usr_1".into(),
            query: "full=true".into(),
            headers: (headers.iter())
                .map(|(name, value)| Header { name: name.to_string(), value: value.to_string() })
                .collect(),
            body: b"{}".to_vec(),
        }
    }

    /// A guest's request reaches a platform-world callee as it was sent
    /// (header names lower-cased, as HTTP has them), UTF-8 values included.
    #[test]
    fn a_services_request_arrives_as_sent() {
        let sent = request(&[("Content-Type", "application/json"), ("x-name", "José")]);
        let arrived = guest_request(&host_request(sent).unwrap());
        assert_eq!(arrived.method, "POST");
        assert_eq!((arrived.path.as_str(), arrived.query.as_str()), ("/users/usr_1", "full=true"));
        assert_eq!(arrived.body, b"{}");
        let headers: Vec<(&str, &str)> =
            arrived.headers.iter().map(|h| (h.name.as_str(), h.value.as_str())).collect();
        assert_eq!(headers, [("content-type", "application/json"), ("x-name", "José")]);
    }

    /// What HTTP cannot carry is refused with the reason, not passed on
    /// mangled.
    #[test]
    fn a_services_request_that_is_not_http_is_refused() {
        let error = host_request(request(&[("bad name", "x")])).unwrap_err();
        assert!(error.contains("is not valid HTTP"), "{error}");
        let error = host_request(request(&[("x-line", "a\nb")])).unwrap_err();
        assert!(error.contains("is not valid HTTP"), "{error}");
        let mut no_slash = request(&[]);
        no_slash.path = "users".into();
        let error = host_request(no_slash).unwrap_err();
        assert!(error.contains("does not start with '/'"), "{error}");
        let mut spaced = request(&[]);
        spaced.path = "/users/a b".into();
        assert!(host_request(spaced).unwrap_err().contains("is not valid HTTP"));
    }

    /// The guest SDK names the headers the platform sets as the platform
    /// does: renaming one on either side alone fails here.
    #[test]
    fn the_sdk_names_the_platform_headers_as_the_platform_does() {
        let sdk = include_str!("../../../components/sdk/src/headers.rs");
        let names = [
            ("CALLER", CALLER_HEADER),
            ("SUBJECT", SUBJECT_HEADER),
            ("AUTH", AUTH_HEADER),
            ("CLAIMS", CLAIMS_HEADER),
            ("ROLES", ROLES_HEADER),
            ("IDEMPOTENCY_KEY", SCOPE_HEADER),
        ];
        for (name, value) in names {
            let line = format!("pub const {name}: &str = \"{value}\";");
            assert!(sdk.contains(&line), "the SDK lacks {line}");
        }
    }
}
