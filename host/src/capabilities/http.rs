//! `wasi:http` for components built for the standard `wasi:http/proxy`
//! world (what `wasmtime serve`, Spin and wasmCloud run), from wasmtime's
//! own `wasmtime-wasi-http`.
//!
//! An incoming request reaches such a component through its
//! `incoming-handler` export ([`crate::runtime::proxy`]), on the same path
//! as a pitstop service: breaker, bulkhead, deadline, memory limit, commit.
//! Outgoing requests (`wasi:http/outgoing-handler`) are refused with
//! `HTTP-request-denied` ([`OutboundHttp`]): the host makes no network
//! connection on a guest's behalf.

use std::future::Future;

use wasmtime::component::Linker;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks, WasiHttpView};

/// The host's answer to a guest's outgoing HTTP request.
#[derive(Debug, Default)]
pub struct OutboundHttp;

/// What `send_request` resolves to (the response and a future reporting
/// its body's errors), as `wasmtime-wasi-http` wants it.
type Sent = Box<
    dyn Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _request_body_done: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        tracing::debug!(uri = %request.uri(), "outgoing HTTP request refused");
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

/// Add `wasi:http/types` and `wasi:http/outgoing-handler` to `linker`
/// (the rest of WASI is there already).
pub fn add_to_linker<T: WasiHttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}
