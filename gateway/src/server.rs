//! The gateway's request pipeline (`Gateway::handle`): trace, route,
//! admit, read, hand to the backend, answer. What each step needs is in a
//! file of its own: options, admission, health, body, reply, listener.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::admission::Guard;
use crate::auth::{Authenticator, Identity};
use crate::body::{DRAIN_LIMIT, discard_body};
use crate::error::json_response;
use crate::listener::serve_http;
use crate::options::{ACCESS_LOG_TARGET, GatewayOptions};
use crate::reply::reply_response;
use crate::trace::{TRACEPARENT, TraceContext};
use crate::{Backend, GatewayError, InvokeError, Reply, RequestRecord, RouteTable};

/// The address of the client, put in each request's extensions by
/// [`serve_http`].
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The HTTP front door. Cheap to clone; clones share routes and backend.
pub struct Gateway<B> {
    pub(crate) inner: Arc<Inner<B>>,
}

impl<B> Clone for Gateway<B> {
    fn clone(&self) -> Self {
        Gateway { inner: self.inner.clone() }
    }
}

pub(crate) struct Inner<B> {
    pub(crate) backend: B,
    // Swapped whole when routes change, so a request sees one consistent table
    // and readers never wait for a writer.
    pub(crate) routes: ArcSwap<RouteTable>,
    pub(crate) options: GatewayOptions,
    pub(crate) authenticator: Authenticator,
    pub(crate) guards: HashMap<String, Guard>,
    pub(crate) default_guard: Guard,
}

/// Request headers starting with this are set only by the platform; the
/// gateway drops any a client sends.
pub const RESERVED_HEADER_PREFIX: &str = "pitstop-";

/// The response headers naming who answered.
pub(crate) const COMPONENT_HEADER: HeaderName = HeaderName::from_static("pitstop-component");
pub(crate) const VERSION_HEADER: HeaderName = HeaderName::from_static("pitstop-version");

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
}

pub(crate) fn method_not_allowed() -> Response<Full<Bytes>> {
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
pub(crate) struct Admitted {
    pub(crate) path: String,
    pub(crate) identity: Option<Identity>,
    pub(crate) pass_authorization: bool,
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
