//! Stand-ins for other services in a test binary under `pitstop
//! test-runner`: an [`Invoke`] in front of the real one, which answers the
//! calls a test stubbed with `testing.stub-service`, records every call, and
//! passes the rest on to the components the runner loaded.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::bindings::services::CallError;
use bytes::Bytes;

use crate::bindings::types::{Request, Response};
use crate::capabilities::services::guest_request;
use crate::invoke::{CallContext, Invoke};

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
    fn answer(&mut self, name: &str, request: Request) -> Option<Result<Response, CallError>> {
        let matches = self
            .stubs
            .iter()
            .filter(|s| {
                s.name == name
                    && s.method.eq_ignore_ascii_case(&request.method)
                    && request.path.starts_with(&s.prefix)
            })
            .max_by_key(|s| s.prefix.len())
            .map(|s| s.reply.clone());
        self.calls.push((name.to_string(), request));
        matches
    }
}

/// [`Stubs`] in front of the real components.
pub struct StubbedServices {
    stubs: Mutex<Stubs>,
    real: Arc<dyn Invoke>,
}

impl StubbedServices {
    /// No stubs yet; every call goes to `real`.
    pub fn new(real: Arc<dyn Invoke>) -> Self {
        StubbedServices { stubs: Mutex::default(), real }
    }

    /// The stubs and the calls recorded, for the `testing` capability.
    pub fn stubs(&self) -> MutexGuard<'_, Stubs> {
        self.stubs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Invoke for StubbedServices {
    fn max_call_depth(&self) -> u32 {
        self.real.max_call_depth()
    }

    fn invoke_nested(
        self: Arc<Self>,
        name: String,
        request: http::Request<Bytes>,
        context: CallContext,
    ) -> Pin<Box<dyn Future<Output = Result<Response, CallError>> + Send>> {
        let stubbed = self.stubs().answer(&name, guest_request(&request));
        match stubbed {
            Some(reply) => Box::pin(async move { reply }),
            None => self.real.clone().invoke_nested(name, request, context),
        }
    }
}
