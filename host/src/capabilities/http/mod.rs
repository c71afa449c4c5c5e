//! `wasi:http` for components built for the standard `wasi:http/proxy`
//! world (what `wasmtime serve`, Spin and wasmCloud run), from wasmtime's
//! own `wasmtime-wasi-http`.
//!
//! An incoming request reaches such a component through its
//! `incoming-handler` export ([`crate::runtime::proxy`]), on the same path
//! as a pitstop service: breaker, bulkhead, deadline, memory limit, commit.
//!
//! Outgoing requests (`wasi:http/outgoing-handler`) go where
//! [`OutboundHttp`] lets them:
//! - `http://NAME.svc/PATH` is a `services` call to component `NAME`, with
//!   everything such a call has: one level deeper in the chain, within the
//!   caller's deadline, `pitstop-caller` and the verified identity set by
//!   the platform, the callee's breaker. A failed call is a `wasi:http`
//!   error code: not deployed `destination-not-found`, circuit open or
//!   overloaded `connection-refused`, the deadline `connection-read-timeout`,
//!   a trap `HTTP-response-incomplete`, a chain too deep
//!   `HTTP-request-denied`.
//! - a host the component's `allowed_outbound_hosts` lists ([`allowlist`])
//!   is reached over the network, HTTP or HTTPS (webpki roots), sent as the
//!   guest wrote it, with every timeout cut to what is left of the
//!   invocation's deadline.
//! - every other authority is refused with `HTTP-request-denied`, and the
//!   host opens no connection.
//!
//! Either kind of request runs beside the guest, which may go on computing;
//! its turn at the CPU is given up only while it blocks waiting
//! ([`crate::capabilities::poll`]).

pub mod allowlist;
mod open;

pub use open::OpenConnections;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::Instant;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks, WasiHttpView};

use crate::bindings::services::CallError;
use crate::bindings::types::{Header, Response};
use crate::capabilities::http::allowlist::AllowedHost;
use crate::capabilities::services::Caller;
use crate::naming::is_valid_name;
use crate::resilience::connections::{ComponentConnections, ConnectionPermit};
use crate::resilience::memory::Charge;

/// What an outgoing request to a component may carry, in bytes.
pub const MAX_OUTGOING_BODY: usize = 1 << 20;

/// The domain that names a component in an outgoing request's authority.
pub const SERVICE_DOMAIN: &str = ".svc";

/// The host's answer to a guest's outgoing HTTP requests.
pub struct OutboundHttp {
    caller: Caller,
    network: Option<Network>,
    /// The connections this invocation opened, closed when it ends.
    open: OpenConnections,
}

impl Drop for OutboundHttp {
    fn drop(&mut self) {
        self.open.close_all();
    }
}

/// Where requests to allowed hosts may go, the tokio runtime whose IO
/// driver their connections register with (one of their own, apart from
/// the gateway's, so neither the gateway nor the guest pool polls guests'
/// sockets), and the caps on how many may be open.
#[derive(Clone)]
pub struct Network {
    /// The component's `allowed_outbound_hosts`.
    pub allowed: Arc<[AllowedHost]>,
    /// A runtime with IO enabled.
    pub io: tokio::runtime::Handle,
    /// The component's and the host's caps on open connections.
    pub connections: Arc<ComponentConnections>,
}

impl OutboundHttp {
    /// Requests to `NAME.svc` go out as calls of `caller`, and those to
    /// hosts `network` allows over the network; without it, none.
    pub fn new(caller: Caller, network: Option<Network>) -> Self {
        OutboundHttp { caller, network, open: OpenConnections::default() }
    }

    /// Send the requests of the invocation `caller` from now on (an
    /// instance reused for another invocation, or parked until the next):
    /// the connections the last invocation left open close.
    pub(crate) fn serve(&mut self, caller: Caller) {
        self.open.close_all();
        self.caller = caller;
    }

    /// Close the connections the invocation opened that are still open.
    pub(crate) fn close_connections(&mut self) {
        self.open.close_all();
    }
}

/// The body's own errors, reported after the response (none here: the
/// body is whole before the response is handed over).
type BodyDone = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// What `send_request` resolves to, as `wasmtime-wasi-http` wants it.
type Sent = Box<dyn Future<Output = Result<(http::Response<WasiBody>, BodyDone), Error>> + Send>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _request_body_done: BodyDone,
    ) -> Sent {
        let host = request.uri().host().unwrap_or_default();
        if let Some(callee) = host.strip_suffix(SERVICE_DOMAIN).filter(|n| is_valid_name(n)) {
            let (callee, caller) = (callee.to_string(), self.caller.clone());
            return Box::new(async move {
                let request = service_request(request).await?;
                let response = caller.send(callee, request).await.map_err(error_code)?;
                // Held until the guest has read it, or drops it.
                let charge = caller.charge("an answer not read yet", response.body.len() as u64);
                let charge =
                    charge.map_err(|refused| Error::InternalError(Some(refused.to_string())))?;
                let done: BodyDone = Box::new(async { Ok(()) });
                Ok((http_response(response, charge)?, done))
            });
        }
        if let Some(network) = &self.network
            && network.allowed.iter().any(|entry| entry.allows(request.uri()))
        {
            let permit = match network.connections.open() {
                Ok(permit) => permit,
                Err(why) => {
                    tracing::debug!(uri = %request.uri(), why, "outgoing HTTP request refused");
                    return Box::new(async { Err(Error::ConnectionLimitReached) });
                }
            };
            let open = self.open.share();
            return send_out(&self.caller, &network.io, request, options, (permit, open));
        }
        tracing::debug!(uri = %request.uri(), "outgoing HTTP request refused");
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

/// The most of an invocation's time left an outgoing request's timeouts
/// leave the guest to answer in (a tenth of what is left, if less).
const ANSWER_MARGIN: Duration = Duration::from_millis(100);

/// Send `request` to an allowed host with wasmtime's own client, every
/// timeout the guest asked for (or 600 s) cut to what is left of the
/// deadline, less [`ANSWER_MARGIN`]. The store being dropped at the deadline aborts it too.
fn send_out(
    caller: &Caller,
    io: &tokio::runtime::Handle,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    (permit, open): (ConnectionPermit, OpenConnections),
) -> Sent {
    caller.note_side_effect();
    // Less a margin: a guest told its request timed out when its own
    // deadline has passed could not answer its client any more.
    let left = caller.deadline().saturating_duration_since(Instant::now());
    let left = left.saturating_sub((left / 10).min(ANSWER_MARGIN));
    let within = |asked: Option<Duration>| Some(asked.map_or(left, |asked| asked.min(left)));
    let options = options.unwrap_or_default();
    let options = RequestOptions {
        connect_timeout: within(options.connect_timeout),
        first_byte_timeout: within(options.first_byte_timeout),
        between_bytes_timeout: within(options.between_bytes_timeout),
    };
    tracing::debug!(uri = %request.uri(), "outgoing HTTP request");
    // Connect (and so register the socket) on the IO runtime; the response
    // and the connection are then polled wherever the guest's futures are.
    let held = open.share();
    let connecting = AbortOnDrop(io.spawn(async move {
        let (response, done) =
            wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
        let done: BodyDone = Box::new(done);
        // The permit stays with the body: the connection is open until
        // the body is read, dropped, or closed with the invocation.
        Ok((response.map(|body| held.hold(body.boxed_unsync(), permit)), done))
    }));
    open.connecting(connecting.0.abort_handle());
    // Dropping the guest's future (the store, at the deadline) ends the
    // connection attempt too.
    Box::new(connecting)
}

/// A task aborted when its handle is dropped; a failed task is an
/// incomplete response.
struct AbortOnDrop<T>(tokio::task::JoinHandle<Result<T, Error>>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.unwrap_or(Err(Error::HttpResponseIncomplete)))
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The guest's request as a `services` call's: its method, path and query
/// (origin-form, the callee reads its authority from `host`), its headers
/// and the whole body, up to [`MAX_OUTGOING_BODY`].
async fn service_request(request: http::Request<WasiBody>) -> Result<http::Request<Bytes>, Error> {
    let (mut head, body) = request.into_parts();
    let body = Limited::new(body, MAX_OUTGOING_BODY)
        .collect()
        .await
        .map_err(|_| Error::HttpRequestBodySize(Some(MAX_OUTGOING_BODY as u64)))?
        .to_bytes();
    let target = head.uri.path_and_query().map_or("/", |target| target.as_str());
    head.uri = http::Uri::try_from(target).map_err(|_| Error::HttpRequestUriInvalid)?;
    Ok(http::Request::from_parts(head, body))
}

/// `wasi:http` headers as the platform's records (values as text, lossy
/// where they are not UTF-8); also for a proxy component's response.
pub fn platform_headers(headers: &http::HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_string(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect()
}

/// The callee's answer as the guest's `wasi:http` response.
fn http_response(response: Response, charge: Charge) -> Result<http::Response<WasiBody>, Error> {
    let mut builder = http::Response::builder().status(response.status);
    for header in &response.headers {
        builder = builder.header(&header.name, &header.value);
    }
    let body = Full::new(Bytes::from(response.body))
        .map_frame(move |frame| {
            let _held = &charge;
            frame
        })
        .map_err(|never| match never {});
    builder.body(body.boxed_unsync()).map_err(|_| Error::HttpResponseIncomplete)
}

/// A failed call as the `wasi:http` error the guest sees (see the module doc).
fn error_code(error: CallError) -> Error {
    match error {
        CallError::NotFound(_) => Error::DestinationNotFound,
        CallError::Unavailable(_) => Error::ConnectionRefused,
        CallError::Timeout => Error::ConnectionReadTimeout,
        CallError::Trapped(_) => Error::HttpResponseIncomplete,
        CallError::Refused(_) => Error::HttpRequestDenied,
    }
}

/// Add `wasi:http/types` and `wasi:http/outgoing-handler` to `linker`
/// (the rest of WASI is there already).
pub fn add_to_linker<T: WasiHttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}
