//! What the gateway needs from whatever runs the components.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

/// A request on its way to a component: the client's request as the
/// gateway admitted it, the one shape it keeps until the guest reads it.
/// Its URI is the path as routed (normalised, the route prefix kept) and
/// the query as received; its headers are the client's, less what the
/// platform sets or withholds, plus the platform's own (`traceparent`,
/// `x-request-id`, the verified `pitstop-*` identity). Every header value
/// is text: the gateway drops any that is not visible ASCII.
#[derive(Debug)]
pub struct Request {
    /// Method, URI, headers and the whole body (its size limit enforced).
    pub http: http::Request<Bytes>,
    /// The gateway's span: invocations are its children.
    pub trace: crate::TraceContext,
    /// When the gateway had read the request head. The request's deadline
    /// counts from here: time spent reading the body or waiting for the
    /// backend to take the request is part of it.
    pub received: std::time::Instant,
}

/// A component's answer, and which version of which component gave it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status the component chose.
    pub status: u16,
    /// Headers the component set.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Bytes,
    /// The component that answered.
    pub component: String,
    /// The version of that component that answered; 0 when no component
    /// did (an HTTP upstream the backend forwards to).
    pub version: u64,
}

/// Why a component produced no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// Nothing of that name is deployed.
    #[error("component {0} is not deployed")]
    NotDeployed(String),
    /// The guest trapped (a panic, `unreachable`, out of bounds, ...).
    #[error("component {component} failed: {message}")]
    Trapped {
        /// The component.
        component: String,
        /// The trap, one line.
        message: String,
    },
    /// The component did not answer within its deadline.
    #[error("component {component} did not answer within {deadline_ms} ms")]
    Timeout {
        /// The component.
        component: String,
        /// The deadline it missed.
        deadline_ms: u64,
    },
    /// The component cannot take requests now; try again later.
    #[error("component {component} is unavailable: {reason}")]
    Unavailable {
        /// The component.
        component: String,
        /// Why (circuit open, overloaded, ...).
        reason: String,
        /// When to try again, for the `Retry-After` header (rounded up to
        /// whole seconds there).
        retry_after: std::time::Duration,
    },
    /// The component's (or upstream's) circuit breaker is open and refused
    /// the request without running it. Not logged per request: the breaker
    /// logs how many it refused, once per state change.
    #[error("component {component} is unavailable: circuit open")]
    CircuitOpen {
        /// The component.
        component: String,
        /// When it may let a call through again, for `Retry-After`.
        retry_after: std::time::Duration,
    },
    /// The platform itself failed (storage, instantiation, ...).
    #[error("internal error: {0}")]
    Internal(String),
    /// The platform's disk is too full to keep what the request wrote;
    /// nothing of it was kept, and reads still work.
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
    /// The request cannot be passed on as sent (a path an HTTP upstream
    /// could read as another route's); the client's fault.
    #[error("{0}")]
    Refused(String),
    /// The request came back to the gateway that forwarded it (an upstream
    /// that points at this gateway, or at a gateway that points back).
    #[error("{0}")]
    Loop(String),
}

/// The answer to `GET /health`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// `"healthy"` or `"unhealthy"`.
    pub status: &'static str,
    /// One entry per check, each `"ok"` or a message saying what is wrong.
    pub checks: serde_json::Map<String, serde_json::Value>,
}

impl HealthReport {
    /// A report from its checks: healthy when every check says `"ok"`.
    pub fn from_checks(checks: serde_json::Map<String, serde_json::Value>) -> Self {
        let healthy = checks.values().all(|v| v == "ok");
        HealthReport { status: if healthy { "healthy" } else { "unhealthy" }, checks }
    }

    /// Whether every check passed.
    pub fn is_healthy(&self) -> bool {
        self.status == "healthy"
    }
}

/// One answered request, for metrics.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    /// The route prefix that matched.
    pub route: &'a str,
    /// The component it routes to.
    pub component: &'a str,
    /// The status sent.
    pub status: u16,
    /// From the request head to the response.
    pub elapsed: Duration,
}

/// Runs components on the gateway's behalf.
pub trait Backend: Send + Sync + 'static {
    /// Run `request` on the active version of `component`.
    fn invoke(
        &self,
        component: &str,
        request: Request,
    ) -> impl Future<Output = Result<Reply, InvokeError>> + Send;

    /// Readiness for `GET /ready`: storage, and that every component in
    /// `routed` is ready to serve.
    fn ready(&self, routed: &[String]) -> impl Future<Output = HealthReport> + Send;

    /// Called once per routed request after the response is built.
    fn observe(&self, _record: &RequestRecord<'_>) {}
}
