//! The runtime as the gateway's [`Backend`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pitstop_gateway::{Backend, HealthReport, InvokeError, Reply, Request, RequestRecord};
use serde_json::{Map, Value};

use crate::invoke::InvokeFailure;
use crate::resilience::breaker::State;
use crate::runtime::Runtime;
use crate::upstream::Upstreams;

/// The gateway's view of a [`Runtime`], and of the HTTP upstreams some
/// routes lead to instead of a component.
#[derive(Clone)]
pub struct RuntimeBackend {
    runtime: Arc<Runtime>,
    upstreams: Upstreams,
    // Components the configuration routes to: health reports them missing
    // even when the live route table has dropped their routes.
    configured: Vec<String>,
}

impl RuntimeBackend {
    /// A backend over `runtime`; `configured` are the components the
    /// configured route table names.
    pub fn new(runtime: Arc<Runtime>, configured: impl IntoIterator<Item = String>) -> Self {
        let mut configured: Vec<String> = configured.into_iter().collect();
        configured.sort();
        configured.dedup();
        RuntimeBackend { runtime, configured, upstreams: Upstreams::default() }
    }

    /// Forward the routes to `upstreams`' names to them.
    pub fn with_upstreams(mut self, upstreams: Upstreams) -> Self {
        self.upstreams = upstreams;
        self
    }
}

impl Backend for RuntimeBackend {
    async fn invoke(&self, component: &str, request: Request) -> Result<Reply, InvokeError> {
        if self.upstreams.contains(component) {
            return self.upstreams.forward(component, request).await;
        }
        match self.runtime.invoke_traced(component, request).await {
            Ok(invoked) => Ok(Reply {
                status: invoked.response.status,
                headers: invoked.response.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                body: Bytes::from(invoked.response.body),
                component: invoked.deployment.name.to_string(),
                version: invoked.deployment.version,
            }),
            Err(failure) => Err(invoke_error(component, failure)),
        }
    }

    async fn ready(&self, routed: &[String]) -> HealthReport {
        let mut checks = Map::new();
        let storage = match self.runtime.check_storage() {
            Ok(()) => Value::from("ok"),
            Err(error) => Value::from(error.to_string()),
        };
        checks.insert("storage".into(), storage);
        let bus = if self.runtime.bus().is_dispatching() {
            Value::from("ok")
        } else {
            Value::from("the event dispatcher is not running")
        };
        checks.insert("bus".into(), bus);
        let mut names: Vec<&String> = routed.iter().chain(&self.configured).collect();
        names.sort();
        names.dedup();
        for name in names {
            if self.upstreams.contains(name) {
                let open = self.upstreams.is_open(name);
                let state = if open { "circuit open" } else { "ok" };
                checks.insert(name.clone(), Value::from(state));
                continue;
            }
            let state = match self.runtime.registry().get(name) {
                None => Value::from("routed but not deployed"),
                Some(deployment) => match deployment.breaker.snapshot().state {
                    State::Open => Value::from("circuit open"),
                    State::Closed | State::HalfOpen => Value::from("ok"),
                },
            };
            checks.insert(format!("component:{name}"), state);
        }
        HealthReport::from_checks(checks)
    }

    fn observe(&self, record: &RequestRecord<'_>) {
        self.runtime.metrics().request(
            record.component,
            record.route,
            record.status,
            record.elapsed,
        );
    }
}

pub(super) fn invoke_error(component: &str, failure: InvokeFailure) -> InvokeError {
    let component = component.to_string();
    match failure {
        InvokeFailure::NotDeployed => InvokeError::NotDeployed(component),
        InvokeFailure::Timeout { deadline_ms } => InvokeError::Timeout { component, deadline_ms },
        InvokeFailure::Trapped(message) => InvokeError::Trapped { component, message },
        InvokeFailure::Unavailable(reason) => {
            InvokeError::Unavailable { component, reason, retry_after: Duration::from_secs(1) }
        }
        InvokeFailure::CircuitOpen { retry_after } => {
            InvokeError::CircuitOpen { component, retry_after }
        }
        InvokeFailure::Internal(message) => InvokeError::Internal(message),
        InvokeFailure::InsufficientStorage(why) => InvokeError::InsufficientStorage(why),
    }
}
