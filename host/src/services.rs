//! The `services` capability: a component calls another by name, in-process.
//!
//! A call is a full invocation of the callee (fresh instance, its own
//! keyspace) that inherits what is left of the caller's deadline and counts
//! one level deeper, so a chain of calls cannot outlive its first caller or
//! recurse without end.

use std::sync::Arc;

use tokio::time::Instant;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::services::{self, CallError};
use crate::bindings::types::{Header, Request, Response};
use crate::runtime::{InvokeFailure, Runtime};
use crate::state::ComponentState;

/// The header naming the calling component on every `services` call.
pub const CALLER_HEADER: &str = "pitstop-caller";

/// Where an invocation sits in a call chain.
#[derive(Debug, Clone, Copy)]
pub struct CallContext {
    /// 0 for a request from the gateway, +1 per nested `services` call.
    pub depth: u32,
    /// When the whole chain must have answered.
    pub deadline: Instant,
}

/// Per-invocation state of the capability.
pub struct ServicesCtx {
    runtime: Arc<Runtime>,
    caller: Arc<str>,
    call: CallContext,
    made_calls: bool,
}

impl ServicesCtx {
    /// Whether the invocation called another service, whose effects running
    /// the invocation again would repeat.
    pub fn made_calls(&self) -> bool {
        self.made_calls
    }

    /// Calls made by `caller`, itself running at `call`.
    pub fn new(runtime: Arc<Runtime>, caller: Arc<str>, call: CallContext) -> Self {
        ServicesCtx { runtime, caller, call, made_calls: false }
    }
}

/// Add the capability to `linker`.
pub fn add_to_linker(linker: &mut Linker<ComponentState>) -> wasmtime::Result<()> {
    services::add_to_linker::<_, HasSelf<ServicesCtx>>(linker, |state| &mut state.services)
}

impl services::Host for ServicesCtx {
    async fn call(&mut self, name: String, mut request: Request) -> Result<Response, CallError> {
        let max_depth = self.runtime.options().max_call_depth;
        if self.call.depth >= max_depth {
            return Err(CallError::Refused(format!(
                "call chain deeper than {max_depth} ({} -> {name})",
                self.caller
            )));
        }
        self.made_calls = true;
        // The callee may trust this header: the gateway strips it from
        // client requests and here it replaces whatever the caller set.
        request.headers.retain(|h| !h.name.eq_ignore_ascii_case(CALLER_HEADER));
        request.headers.push(Header { name: CALLER_HEADER.into(), value: self.caller.to_string() });
        let nested = CallContext { depth: self.call.depth + 1, deadline: self.call.deadline };
        tracing::debug!(
            caller = &*self.caller,
            callee = name,
            depth = nested.depth,
            "service call"
        );
        // Boxed: this future contains an invocation, which may contain this future.
        let invoked = Box::pin(self.runtime.invoke(&name, request, Some(nested))).await;
        match invoked {
            Ok(invoked) => Ok(invoked.response),
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
