//! The hyper server: accept loop, per-request pipeline, graceful shutdown.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::auth::{AuthSettings, Authenticator, Identity, RoutePolicy};
use crate::error::json_response;
use crate::ratelimit::Limiter;
use crate::trace::{TRACEPARENT, TraceContext};
use crate::{Backend, GatewayError, InvokeError, Reply, Request, RequestRecord, RouteTable};

/// Limits and timeouts of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Largest request body accepted, in bytes; larger ones get 413 without
    /// being read to the end.
    pub max_request_body: usize,
    /// Largest response body a component may send, in bytes; a larger one
    /// is replaced by a 502.
    pub max_response_body: usize,
    /// How long a client may take to send the request head. Without it a
    /// client sending one byte a second holds a connection for ever.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// Who may call which route.
    pub access: AccessOptions,
    /// Write an access log line per request ([`ACCESS_LOG_TARGET`]).
    pub access_log: bool,
}

/// The tracing target of the access log: one INFO event per request with
/// its method, path, status, duration, component and trace id, written only
/// when [`GatewayOptions::access_log`] is on. A target of its own, so
/// `RUST_LOG` can filter it apart from everything else.
pub const ACCESS_LOG_TARGET: &str = "pitstop::access";

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            max_request_body: 1024 * 1024,
            max_response_body: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            access: AccessOptions::default(),
            access_log: false,
        }
    }
}

/// Route policies and the credentials they are checked against.
#[derive(Clone)]
pub struct AccessOptions {
    /// Keys, secrets and API keys.
    pub settings: AuthSettings,
    /// The policy of a route that has none of its own (routes added through
    /// the admin API, say). It cannot carry a rate limit.
    pub default: RoutePolicy,
    /// Policies by route prefix.
    pub routes: BTreeMap<String, RoutePolicy>,
}

impl std::fmt::Debug for AccessOptions {
    // Keys and secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessOptions")
            .field("default", &self.default)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Default for AccessOptions {
    /// Everything public: the library's default. The platform's is
    /// [`RoutePolicy::DEFAULT`].
    fn default() -> Self {
        AccessOptions {
            settings: AuthSettings::default(),
            default: RoutePolicy::all(crate::auth::Access::Public),
            routes: BTreeMap::new(),
        }
    }
}

/// A policy with its rate-limit buckets.
struct Guard {
    policy: RoutePolicy,
    limiter: Option<Limiter>,
}

impl Guard {
    fn new(policy: RoutePolicy, authenticator: &Authenticator) -> Result<Self, String> {
        for access in [policy.read, policy.write] {
            if !authenticator.supports(access) {
                return Err(format!(
                    "a policy needs {access:?} credentials, and none are configured"
                ));
            }
        }
        let limiter = policy.rate_limit.map(Limiter::new).transpose()?;
        Ok(Guard { policy, limiter })
    }
}

/// The address of the client, put in each request's extensions by
/// [`serve_http`].
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The HTTP front door. Cheap to clone; clones share routes and backend.
pub struct Gateway<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Gateway<B> {
    fn clone(&self) -> Self {
        Gateway { inner: self.inner.clone() }
    }
}

struct Inner<B> {
    backend: B,
    // Swapped whole when routes change, so a request sees one consistent table
    // and readers never wait for a writer.
    routes: ArcSwap<RouteTable>,
    options: GatewayOptions,
    authenticator: Authenticator,
    guards: HashMap<String, Guard>,
    default_guard: Guard,
}

/// Request headers starting with this are set only by the platform; the
/// gateway drops any a client sends.
pub const RESERVED_HEADER_PREFIX: &str = "pitstop-";

/// The response headers naming who answered.
const COMPONENT_HEADER: HeaderName = HeaderName::from_static("pitstop-component");
const VERSION_HEADER: HeaderName = HeaderName::from_static("pitstop-version");

impl<B: Backend> Gateway<B> {
    /// A gateway routing through `routes` to `backend`. Fails when a policy
    /// needs credentials that are not configured, or a rate limit is empty.
    pub fn new(backend: B, routes: RouteTable, options: GatewayOptions) -> Result<Self, String> {
        let access = &options.access;
        let authenticator = Authenticator::new(&access.settings)?;
        if access.default.rate_limit.is_some() {
            return Err("the default policy cannot carry a rate limit; set one on a route".into());
        }
        let default_guard = Guard::new(access.default, &authenticator)?;
        let mut guards = HashMap::new();
        for (prefix, policy) in &access.routes {
            let guard =
                Guard::new(*policy, &authenticator).map_err(|e| format!("route {prefix}: {e}"))?;
            guards.insert(prefix.clone(), guard);
        }
        Ok(Gateway {
            inner: Arc::new(Inner {
                backend,
                routes: ArcSwap::from_pointee(routes),
                options,
                authenticator,
                guards,
                default_guard,
            }),
        })
    }

    /// The backend the gateway calls.
    pub fn backend(&self) -> &B {
        &self.inner.backend
    }

    /// The current route table.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.inner.routes.load_full()
    }

    /// Replace the route table; requests already routed are not affected.
    pub fn set_routes(&self, routes: RouteTable) {
        self.inner.routes.store(Arc::new(routes));
    }

    /// Serve HTTP/1.1 on `listener` until `shutdown` resolves, then stop
    /// accepting and give in-flight requests the grace period to finish.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let options = self.inner.options.clone();
        serve_http(listener, options, shutdown, move |request| {
            let gateway = self.clone();
            async move { gateway.handle(request).await }
        })
        .await;
    }

    /// Answer one request: the whole pipeline, usable without a socket.
    pub async fn handle<In>(&self, request: http::Request<In>) -> Response<Full<Bytes>>
    where
        In: Body<Data = Bytes>,
        In::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let request_id = request_id(request.headers());
        let access = self.inner.options.access_log.then(|| Access {
            method: request.method().clone(),
            path: request.uri().path().to_string(),
        });
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = %request_id,
            trace_id = tracing::field::Empty,
            status = tracing::field::Empty,
            component = tracing::field::Empty,
        );
        let parent = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse);
        let trace = TraceContext::attach(&span, parent);
        let mut route = None;
        let head = request.method() == Method::HEAD;
        let outcome = self
            .dispatch(request, trace, started, &request_id, &mut route)
            .instrument(span.clone())
            .await;
        let (mut response, answered_by) = match outcome {
            Ok(reply) => {
                let who = Some((reply.component.clone(), reply.version));
                match reply_response(reply, self.inner.options.max_response_body, head) {
                    Ok(response) => (response, who),
                    Err(error) => {
                        span.in_scope(|| tracing::warn!(%error, "request failed"));
                        (error.into_response(), who)
                    }
                }
            }
            Err(DispatchOutcome::Local(response)) => (response, None),
            Err(DispatchOutcome::Failed(error)) => {
                // An open circuit's refusals are counted and logged by the
                // breaker, once per state change: one line each would be
                // tens of thousands of lines a second in front of a busy route.
                let refused =
                    matches!(error, GatewayError::Invoke(InvokeError::CircuitOpen { .. }));
                if error.status().is_server_error() && !refused {
                    span.in_scope(|| tracing::warn!(%error, "request failed"));
                }
                (error.into_response(), None)
            }
        };
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        span.record("status", status);
        if let Some((component, _)) = &answered_by {
            span.record("component", tracing::field::display(component));
        }
        if let Some(Access { method, path }) = access {
            let (component, version) = match &answered_by {
                Some((component, version)) => {
                    (Some(&**component), Some(*version).filter(|v| *v > 0))
                }
                None => (None, None),
            };
            tracing::info!(
                target: ACCESS_LOG_TARGET,
                %method,
                path,
                status,
                duration_ms = elapsed.as_secs_f64() * 1e3,
                component,
                version,
                trace_id = %trace.trace_id_hex(),
                request_id = %request_id,
                "request"
            );
        }
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::try_from(request_id) {
            headers.insert(REQUEST_ID_HEADER, value);
        }
        if let Ok(value) = HeaderValue::try_from(trace.header()) {
            headers.insert(TRACEPARENT, value);
        }
        if let Some((prefix, component)) = &route {
            self.inner.backend.observe(&RequestRecord {
                route: prefix,
                component,
                status,
                elapsed,
            });
        }
        response
    }

    async fn dispatch<In>(
        &self,
        request: http::Request<In>,
        trace: TraceContext,
        received: Instant,
        request_id: &str,
        matched: &mut Option<(String, String)>,
    ) -> Result<Reply, DispatchOutcome>
    where
        In: Body<Data = Bytes>,
        In::Error: std::error::Error + Send + Sync + 'static,
    {
        // Routed, and handed on, as the target will read it (crate::paths).
        let path = match crate::paths::normalise(request.uri().path()) {
            Ok(path) => path.into_owned(),
            Err(refused) => {
                discard_body(request.into_body(), DRAIN_LIMIT).await;
                return Err(GatewayError::UnclearPath(refused.to_string()).into());
            }
        };
        match path.as_str() {
            "/health" => return Err(DispatchOutcome::Local(self.health(request.method()))),
            "/ready" => return Err(DispatchOutcome::Local(self.ready(request.method()).await)),
            _ => {}
        }
        let routes = self.inner.routes.load();
        let Some(route) = routes.route_for(&path) else {
            discard_body(request.into_body(), DRAIN_LIMIT).await;
            return Err(GatewayError::NoRoute(path).into());
        };
        let (prefix, component) = (route.prefix.clone(), route.component.clone());
        *matched = Some((prefix.clone(), component.clone()));
        let guard = self.guard_for(&prefix);
        // A server that ignores case, `;` parameters or a `.json` suffix
        // would serve this path from a more specific route's handler: if
        // that route has other rules (policy, rate limit, target), which
        // ones the request passed depends on the server. Refused instead.
        let rival = routes.rivals(&path, route).find(|rival| {
            rival.component != component || !std::ptr::eq(self.guard_for(&rival.prefix), guard)
        });
        if let Some(rival) = rival {
            let message = format!(
                "path {path:?} is ambiguous: it lies in route {prefix}, but a server that ignores \
                 letter case, ';' parameters or a '.format' suffix would read it as lying in \
                 route {}, which has other rules; send the path as that route spells it",
                rival.prefix
            );
            drop(routes);
            discard_body(request.into_body(), DRAIN_LIMIT).await;
            return Err(GatewayError::UnclearPath(message).into());
        }
        drop(routes);
        let identity = match self.admit(guard, &request) {
            Ok(identity) => identity,
            Err(error) => {
                discard_body(request.into_body(), DRAIN_LIMIT).await;
                return Err(error.into());
            }
        };
        let admitted =
            Admitted { path, identity, pass_authorization: guard.policy.pass_authorization };
        let request = self.read_request(request, admitted, trace, received, request_id).await?;
        let reply =
            self.inner.backend.invoke(&component, request).await.map_err(GatewayError::from)?;
        Ok(reply)
    }

    /// The policy of route `prefix`: its own, else that of the longest
    /// configured prefix containing it (a component deployed at
    /// `/legacy/users` inside an upstream's `/legacy` keeps `/legacy`'s
    /// auth and rate limit), else the default.
    fn guard_for(&self, prefix: &str) -> &Guard {
        if let Some(guard) = self.inner.guards.get(prefix) {
            return guard;
        }
        (self.inner.guards.iter())
            .filter(|(outer, _)| crate::routes::prefix_matches(outer, prefix))
            .max_by_key(|(outer, _)| outer.len())
            .map_or(&self.inner.default_guard, |(_, guard)| guard)
    }

    /// Check the route's policy and rate limit; the verified caller, if any.
    fn admit<In>(
        &self,
        guard: &Guard,
        request: &http::Request<In>,
    ) -> Result<Option<Identity>, GatewayError> {
        let access = guard.policy.access(request.method());
        let identity = match access {
            // A route that passes the client's Authorization on leaves its
            // token to the server behind it.
            crate::auth::Access::Public if guard.policy.pass_authorization => None,
            crate::auth::Access::Public => self.inner.authenticator.identify(request.headers())?,
            _ => self.inner.authenticator.check(access, request.headers())?,
        };
        if let Some(limiter) = &guard.limiter {
            let client = match (&identity, request.extensions().get::<ClientAddr>()) {
                (Some(identity), _) => format!("{}:{}", identity.method, identity.subject),
                (None, Some(ClientAddr(addr))) => format!("ip:{}", addr.ip()),
                (None, None) => "unknown".to_string(),
            };
            if let Err(wait) = limiter.check(&client) {
                return Err(GatewayError::RateLimited { retry_after: wait });
            }
        }
        Ok(identity)
    }

    /// Liveness: the process answers. Nothing else is checked, so a
    /// supervisor restarts only a host that is truly stuck.
    fn health(&self, method: &Method) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed();
        }
        let mut checks = serde_json::Map::new();
        checks.insert("gateway".into(), "ok".into());
        json_response(StatusCode::OK, &crate::HealthReport::from_checks(checks))
    }

    /// The readiness report `/ready` answers: the backend's checks of every
    /// component the route table names (see [`Backend::ready`]).
    pub async fn readiness(&self) -> crate::HealthReport {
        let routed = self.inner.routes.load().components();
        self.inner.backend.ready(&routed).await
    }

    /// Readiness: whether requests can be served now (see [`Backend::ready`]).
    async fn ready(&self, method: &Method) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed();
        }
        let report = self.readiness().await;
        let status =
            if report.is_healthy() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        json_response(status, &report)
    }

    async fn read_request<In>(
        &self,
        request: http::Request<In>,
        admitted: Admitted,
        trace: TraceContext,
        received: Instant,
        request_id: &str,
    ) -> Result<Request, GatewayError>
    where
        In: Body<Data = Bytes>,
        In::Error: std::error::Error + Send + Sync + 'static,
    {
        let Admitted { path, identity, pass_authorization } = admitted;
        let (parts, body) = request.into_parts();
        let body = read_body(&parts.headers, body, self.inner.options.max_request_body).await?;
        // A verified API key is long-lived: the component gets the key's
        // name as the subject, never the key itself.
        let strip_key = identity.as_ref().is_some_and(|i| i.method == "api-key");
        let mut headers: Vec<(String, String)> = parts
            .headers
            .iter()
            // `pitstop-*` headers are the platform's to set (the caller of a
            // service call, the verified subject): a client must not be able
            // to forge them. The trace and request id are replaced by ours.
            .filter(|(name, _)| {
                // Judged as spelled with '-' for '_': servers that read
                // headers as CGI variables (WSGI, Rack, PHP) cannot tell
                // `pitstop_subject` from `pitstop-subject`.
                let name = dashed(name.as_str());
                let name = name.as_ref();
                !name.starts_with(RESERVED_HEADER_PREFIX)
                    && name != TRACEPARENT
                    && name != REQUEST_ID_HEADER
                    && !(strip_key && name == crate::auth::API_KEY_HEADER)
                    // A bearer token stays at the gateway unless the route
                    // says otherwise: any component holding it could
                    // replay it against every other route.
                    && (pass_authorization || name != http::header::AUTHORIZATION.as_str())
            })
            .filter_map(|(name, value)| {
                // Components see text headers; a header that is not UTF-8 is
                // dropped rather than mangled.
                value.to_str().ok().map(|v| (name.as_str().to_string(), v.to_string()))
            })
            .collect();
        headers.push((TRACEPARENT.to_string(), trace.header()));
        headers.push((REQUEST_ID_HEADER.to_string(), request_id.to_string()));
        if let Some(identity) = &identity {
            headers.extend(identity.headers());
        }
        Ok(Request {
            method: parts.method.as_str().to_string(),
            path,
            query: parts.uri.query().unwrap_or_default().to_string(),
            headers,
            body,
            trace,
            received,
        })
    }
}

/// Serve HTTP/1.1 connections from `listener`, answering each request with
/// `handler`, until `shutdown` resolves; then stop accepting and give
/// in-flight requests `options.shutdown_grace` to finish. The gateway and the
/// host's admin API both run on this loop.
pub async fn serve_http<H, F>(
    listener: TcpListener,
    options: GatewayOptions,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead
                    // of spinning, keep serving the connections we have.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |mut request: http::Request<Incoming>| {
                    request.extensions_mut().insert(ClientAddr(peer));
                    let answer = handler(request);
                    async move { Ok::<_, Infallible>(answer.await) }
                }),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(options.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; dropping the remaining connections");
        }
    }
}

/// Most bytes of a rejected body read (and dropped) before answering.
///
/// A client still sending its body when the answer comes would see a reset
/// connection instead of the 413 or 401 (hyper closes a connection whose
/// request body was left unread). Reading a bounded amount first lets
/// ordinary clients see the answer; beyond the bound, the client should use
/// `Expect: 100-continue` (curl does for large bodies), and then it sends
/// nothing before the answer.
pub const DRAIN_LIMIT: usize = 8 << 20;
/// Longest a rejected body is read for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Collect a request body of at most `limit` bytes. A body that announces a
/// larger `Content-Length`, or grows past the limit while streaming, is
/// refused; it is never buffered beyond the limit.
pub async fn read_body<In>(
    headers: &http::HeaderMap,
    body: In,
    limit: usize,
) -> Result<Bytes, GatewayError>
where
    In: Body<Data = Bytes>,
    In::Error: std::error::Error + Send + Sync + 'static,
{
    let mut body = std::pin::pin!(body);
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit as u64) {
        if announced.is_some_and(|len| len <= DRAIN_LIMIT as u64) {
            discard_body(body.as_mut(), DRAIN_LIMIT).await;
        }
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.as_mut().frame().await {
        let frame =
            frame.map_err(|e| GatewayError::BadRequest(format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if collected.len() + data.len() > limit {
            discard_body(body.as_mut(), DRAIN_LIMIT.saturating_sub(collected.len())).await;
            return Err(GatewayError::BodyTooLarge { limit });
        }
        collected.extend_from_slice(&data);
    }
    Ok(collected.freeze())
}

/// Read and drop at most `cap` bytes of `body`, for at most two seconds.
pub async fn discard_body<In>(body: In, cap: usize)
where
    In: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.as_mut().frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > cap {
                break;
            }
        }
    })
    .await;
}

fn method_not_allowed() -> Response<Full<Bytes>> {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({ "error": "method not allowed" }),
    )
}

/// The client's `x-request-id` when it is a sane token (at most 128 visible
/// ASCII characters), else a new random one.
fn request_id(headers: &http::HeaderMap) -> String {
    let given = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
    match given {
        Some(id) => id.to_string(),
        None => TraceContext::new_root().span_id_hex(),
    }
}

/// A request that passed the route's policy: its path as routed, who
/// sent it, and what of its credentials goes on.
struct Admitted {
    path: String,
    identity: Option<Identity>,
    pass_authorization: bool,
}

/// What the access log line needs of the request, taken before it is
/// handed on.
struct Access {
    method: http::Method,
    path: String,
}

/// Either a failure, or a response the gateway produced itself (`/health`).
enum DispatchOutcome {
    Failed(GatewayError),
    Local(Response<Full<Bytes>>),
}

impl From<GatewayError> for DispatchOutcome {
    fn from(error: GatewayError) -> Self {
        DispatchOutcome::Failed(error)
    }
}

/// The HTTP response for a component's reply, with the headers naming it.
/// Most headers a component's answer may carry.
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Most bytes of header names and values a component's answer may carry.
/// Heads are bounded like bodies: a guest must not make the gateway send
/// megabytes of head, nor one so large that hyper gives up on the
/// connection without a word.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 << 10;

/// The component's answer as HTTP, or why it cannot be sent (a 502).
/// `head`: it answers a HEAD request, so an empty answer keeps its
/// `content-length` (the size of the GET answer: what an upstream's HEAD
/// answer carries); hyper sets the length of any other body itself.
fn reply_response(
    reply: Reply,
    max_body: usize,
    head: bool,
) -> Result<Response<Full<Bytes>>, GatewayError> {
    if reply.body.len() > max_body {
        return Err(GatewayError::InvalidReply {
            component: reply.component,
            reason: format!("a body of {} bytes exceeds the limit of {max_body}", reply.body.len()),
        });
    }
    // An interim status (1xx) is not an answer: "101 Switching Protocols"
    // would hand the client's connection over to nobody.
    let status = match StatusCode::from_u16(reply.status) {
        Ok(status) if (200..=599).contains(&reply.status) => status,
        _ => {
            return Err(GatewayError::InvalidReply {
                component: reply.component,
                reason: format!("status {} is not a final HTTP status (200-599)", reply.status),
            });
        }
    };
    let head_bytes: usize =
        reply.headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    if reply.headers.len() > MAX_RESPONSE_HEADERS || head_bytes > MAX_RESPONSE_HEAD_BYTES {
        return Err(GatewayError::InvalidReply {
            component: reply.component,
            reason: format!(
                "a response head of {} headers and {head_bytes} bytes exceeds the limit of \
                 {MAX_RESPONSE_HEADERS} headers and {MAX_RESPONSE_HEAD_BYTES} bytes",
                reply.headers.len()
            ),
        });
    }
    let response_body_empty = reply.body.is_empty();
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        if head && response_body_empty && name.eq_ignore_ascii_case("content-length") {
            if let Ok(length) = value.trim().parse::<u64>()
                && !headers.contains_key(header::CONTENT_LENGTH)
            {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
            continue;
        }
        match (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            (Ok(name), Ok(value)) if !is_hop_by_hop(name.as_str()) => {
                headers.append(name, value);
            }
            _ => tracing::debug!(component = reply.component, name, "dropped an invalid header"),
        }
    }
    headers.insert(
        COMPONENT_HEADER,
        HeaderValue::try_from(reply.component.as_str()).unwrap_or(HeaderValue::from_static("?")),
    );
    // Version 0 is no component's: an HTTP upstream answered.
    if reply.version > 0 {
        headers.insert(VERSION_HEADER, HeaderValue::from(reply.version));
    }
    Ok(response)
}

/// `name` with every `_` read as `-`: how a server that maps headers to
/// CGI-style variables (`HTTP_X_FORWARDED_FOR`) sees it. A header whose
/// dashed name is one the gateway sets or strips must be judged by that
/// name, or `x_forwarded_for` passes for `x-forwarded-for`.
pub fn dashed(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains('_') {
        std::borrow::Cow::Owned(name.replace('_', "-"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// Headers that describe the connection, which belongs to the gateway
/// (`name` lower-case).
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "te"
            | "trailer"
    )
}
