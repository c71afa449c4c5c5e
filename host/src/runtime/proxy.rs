//! A request to a `wasi:http/proxy` component: the host's request handed to
//! the guest as a `wasi:http` incoming request, the guest's `handle` called, and its
//! response (head and body) collected into the platform's [`Response`].
//!
//! The guest writes its body after it sets the response, while `handle` is
//! still running, into a channel of a chunk or two: the body is read at
//! the same time as the call runs, or a body of a few chunks would wait
//! for ever. It is read up to one byte past the gateway's limit and no
//! further, so a guest streaming gigabytes costs the host a megabyte, and
//! the gateway answers 502 as for any service's oversized answer.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::bindings::types::Response;
use crate::capabilities::http::platform_headers;
use crate::runtime::state::ComponentState;

/// The export a `wasi:http/proxy` component answers requests with. The
/// lookup matches any 0.2.x release (semver), as the linker does.
pub const PROXY_EXPORT: &str = "wasi:http/incoming-handler@0.2.12";

/// What the guest sent to its response-outparam.
type Sent = Result<http::Response<HyperOutgoingBody>, ErrorCode>;

/// Why a proxy component gave no response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The guest returned without setting a response.
    #[error("the component returned without answering (response-outparam.set was not called)")]
    NoResponse,
    /// The guest answered with an error code instead of a response.
    #[error("the component answered with error code {0:?}")]
    ErrorCode(ErrorCode),
    /// The body failed (aborted, wrong length, over the limit).
    #[error("the component's response body failed: {0}")]
    Body(String),
}

/// Call `proxy`'s `handle` with `request`, reading at most `max_body` + 1
/// bytes of the body; the guest's trap, if any, is the error (so the
/// runtime reads it as it reads any trap).
pub async fn call(
    store: &mut Store<ComponentState>,
    proxy: &Proxy,
    request: &http::Request<Bytes>,
    max_body: usize,
) -> wasmtime::Result<Response> {
    let incoming = incoming(request);
    let (tx, rx) = tokio::sync::oneshot::channel::<Sent>();
    // Shared with the call's end: a guest that returns without answering
    // drops the sender there, so the body side stops waiting.
    let tx = Arc::new(Mutex::new(Some(tx)));
    let request = store.data_mut().http().new_incoming_request(Scheme::Http, incoming)?;
    let out = store.data_mut().http().new_response_outparam_from_callback({
        let tx = tx.clone();
        move |sent| {
            if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = tx.send(sent);
            }
        }
    })?;
    let handle = async {
        let called =
            proxy.wasi_http_incoming_handler().call_handle(&mut *store, request, out).await;
        tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        called
    };
    let collect = async {
        let response = match rx.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => return Err(ProxyError::ErrorCode(code)),
            Err(_) => return Err(ProxyError::NoResponse),
        };
        let (head, body) = response.into_parts();
        let mut body = std::pin::pin!(body);
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ProxyError::Body(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
                if bytes.len() > max_body {
                    return Ok((head, bytes, Oversized::Yes));
                }
            }
        }
        Ok((head, bytes, Oversized::No))
    };
    let (called, collected) = tokio::join!(handle, collect);
    // Too large: the gateway's 502 says so, whatever the guest did after
    // its stream was cut off. Otherwise a trap comes first: it explains a
    // missing or broken response.
    if !matches!(collected, Ok((_, _, Oversized::Yes))) {
        called?;
    }
    let (head, body, _) = collected?;
    Ok(Response { status: head.status.as_u16(), headers: platform_headers(&head.headers), body })
}

/// Whether the body was cut off past the limit.
enum Oversized {
    Yes,
    No,
}

/// The request as a `wasi:http` incoming one: the same head (the path as
/// routed, origin-form) with `host` defaulted to `localhost`, and the body
/// shared, not copied. Made anew for each run: a rerun after a lost commit
/// race or a canary's refusal gives the guest the same request again.
fn incoming(request: &http::Request<Bytes>) -> http::Request<Full<Bytes>> {
    let mut incoming = http::Request::new(Full::new(request.body().clone()));
    *incoming.method_mut() = request.method().clone();
    *incoming.uri_mut() = request.uri().clone();
    *incoming.version_mut() = request.version();
    *incoming.headers_mut() = request.headers().clone();
    if !incoming.headers().contains_key(http::header::HOST) {
        incoming
            .headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
    }
    incoming
}
