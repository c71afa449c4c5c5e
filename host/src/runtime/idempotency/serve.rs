//! The gateway's requests through [`Runtime`] with their keys claimed,
//! answers kept and replayed, and the sweep of expired records.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use pitstop_gateway::{GatewayError, TraceContext};
use tokio::time::Instant;

use super::{Claim, HEADER, LEASE_GRACE, SCOPE_HEADER, claim, error, sweep};
use crate::bindings::types::Response;
use crate::capabilities::services::header;
use crate::events::queue::now_ms;
use crate::invoke::InvokeFailure;
use crate::runtime::Runtime;
use crate::runtime::backend::invoke_error;
use crate::runtime::pipeline::Invoked;
use crate::runtime::registry::Deployment;
use crate::storage::StorageError;

/// How often expired records are looked for.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Runtime {
    /// [`Runtime::invoke_in_trace`] for a request from the gateway, keeping
    /// its answer when it is a write sent with an `Idempotency-Key`, and
    /// answering a retry with it.
    pub(in crate::runtime) async fn invoke_keeping(
        self: &Arc<Self>,
        name: &str,
        request: http::Request<Bytes>,
        parent: TraceContext,
        received: Instant,
    ) -> Result<Invoked, InvokeFailure> {
        // The header is looked for first: most requests carry none, and
        // pay nothing more.
        let claimed = match header(&request, HEADER).and_then(|_| self.registry.get(name)) {
            Some(deployment) => {
                let settings = self.options.settings(name);
                let lease = settings.deadline + LEASE_GRACE;
                match claim(&deployment, &request, settings.idempotency_ttl, lease) {
                    Ok(Claim::Unkeyed) => None,
                    Ok(Claim::Answer(response)) => return Ok(Invoked { response, deployment }),
                    Ok(Claim::Run(keep)) => Some((deployment, keep)),
                    Err(error) => return Err(storage_failure(error)),
                }
            }
            None => None,
        };
        let Some((deployment, keep)) = claimed else {
            return self.invoke_in_trace(name, &request, None, Some(parent), received, None).await;
        };
        let mut request = request;
        let scope = HeaderValue::try_from(keep.scope()).expect("hex is a header value");
        request.headers_mut().insert(SCOPE_HEADER, scope);
        let outcome =
            self.invoke_in_trace(name, &request, None, Some(parent), received, Some(&keep)).await;
        let answer = match &outcome {
            Ok(invoked) => invoked.response.clone(),
            Err(failure) => failure_response(name, failure.clone()),
        };
        match keep.settle(&deployment, &answer) {
            Ok(true) => {
                if let Err(error) = self.flush().await {
                    tracing::warn!(component = name, %error, "flushing a kept answer");
                }
            }
            Ok(false) => {}
            // The answer stands; a retry may find the lease until it ends.
            Err(error) => tracing::warn!(component = name, %error, "settling an Idempotency-Key"),
        }
        outcome
    }

    /// Every [`SWEEP_EVERY`], remove the records that ended from every
    /// deployed component's keyspace, until `stop`.
    pub async fn sweep_kept_answers(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            let deployments: Vec<Arc<Deployment>> =
                self.registry.active().values().cloned().collect();
            for deployment in deployments {
                let name = deployment.name.clone();
                let swept = tokio::task::spawn_blocking(move || sweep(&deployment, now_ms())).await;
                match swept {
                    Ok(Ok(0)) => {}
                    Ok(Ok(removed)) => {
                        tracing::debug!(component = %name, removed, "expired kept answers removed")
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(component = %name, %error, "sweeping kept answers")
                    }
                    Err(error) => {
                        tracing::warn!(component = %name, %error, "sweeping kept answers")
                    }
                }
            }
        }
    }
}

/// What a claim that could not read or write the keyspace answers.
fn storage_failure(error: StorageError) -> InvokeFailure {
    match error {
        StorageError::NoSpace(why) => InvokeFailure::InsufficientStorage(why),
        StorageError::Unavailable(why) => InvokeFailure::Unavailable(why),
        other => InvokeFailure::Internal(format!("keeping an Idempotency-Key: {other}")),
    }
}

/// The answer the gateway makes of `failure`, to keep for a retry.
fn failure_response(component: &str, failure: InvokeFailure) -> Response {
    let failure = GatewayError::Invoke(invoke_error(component, failure));
    error(failure.status().as_u16(), &failure.to_string())
}
