//! What the capabilities need from the runtime, and no more: running
//! another component's handler ([`Invoke`]), where a call sits in its chain
//! ([`CallContext`]), and why an invocation produced no response
//! ([`InvokeFailure`]). The `services` capability holds an `Arc<dyn Invoke>`
//! rather than the runtime itself, so it does not import it: the runtime in
//! production, and in `pitstop test-runner` the test's stubs in front of it
//! ([`crate::testing::stubs`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pitstop_gateway::TraceContext;
use tokio::time::Instant;

use crate::bindings::services::CallError;
use crate::bindings::types::Response;

/// Runs a request on the active version of a component, as a nested call.
pub trait Invoke: Send + Sync + 'static {
    /// The deepest call chain allowed; a call beyond it is refused.
    fn max_call_depth(&self) -> u32;

    /// `request` to component `name`, within `context` (its depth already
    /// counted, its deadline what is left of the caller's), answered as the
    /// `services` interface answers the guest.
    fn invoke_nested(
        self: Arc<Self>,
        name: String,
        request: http::Request<bytes::Bytes>,
        context: CallContext,
    ) -> Pin<Box<dyn Future<Output = Result<Response, CallError>> + Send>>;
}

/// Where an invocation sits in a call chain.
#[derive(Debug, Clone, Copy)]
pub struct CallContext {
    /// 0 for a request from the gateway, +1 per nested `services` call.
    pub depth: u32,
    /// When the whole chain must have answered.
    pub deadline: Instant,
    /// The span of the invocation: calls and events it makes continue its trace.
    pub trace: TraceContext,
}

/// Why an invocation produced no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeFailure {
    /// No component of that name is active.
    #[error("not deployed")]
    NotDeployed,
    /// The deadline passed first.
    #[error("no answer within {deadline_ms} ms")]
    Timeout {
        /// The deadline that passed, in milliseconds.
        deadline_ms: u64,
    },
    /// The guest trapped.
    #[error("trapped: {0}")]
    Trapped(String),
    /// The platform cannot take the call now (instance pool exhausted, ...).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The component's circuit is open: the guest was not called.
    #[error("circuit open; retry in {} s", retry_after.as_secs().max(1))]
    CircuitOpen {
        /// When a probe call will be let through.
        retry_after: Duration,
    },
    /// The platform failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// The platform's disk is below its watermark: what the invocation
    /// did was not kept ([`crate::storage::disk`]). Not the component's
    /// fault.
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
}
