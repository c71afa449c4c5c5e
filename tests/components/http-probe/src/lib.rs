//! A `wasi:http/proxy` component that shows the tests what a standard
//! component sees and can do, on paths under `/h/`:
//!
//! - `/h/echo...`: `200`, text lines `method M`, `path P` (with the query),
//!   `header name: value` for each header, `body N bytes`.
//! - `/h/status/{code}`: that status, empty body.
//! - `/h/sleep/{ms}`: `200` after `ms` milliseconds (waiting, not computing).
//! - `/h/big/{kib}`: `200` with a body of `kib` KiB of `x`, in 4 KiB writes.
//! - `/h/trap`: panics. `/h/loop`: computes for ever.
//! - `/h/noset`: returns without answering.
//! - `/h/fetch/{authority}/{path...}`: a GET to `http://authority/path`;
//!   answers `200` with `status S` and the body, or `502` with the error.
//! - `/h/fan/{n}/{authority}/{path...}`: starts `n` GETs to
//!   `http://authority/path` at once, waits 500 ms, and answers how many
//!   are `pending N`, `refused N` (`connection-limit-reached`), `answered
//!   N`, `other N`; `/h/fan-keep/...` the same, keeping the requests in the
//!   instance after it answers (for a reused instance).

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingRequest, Method, OutgoingBody,
    OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme,
};

struct Probe;

impl wasip2::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let route = path.split('?').next().unwrap_or_default().to_string();
        let segments: Vec<&str> = route.trim_start_matches("/h/").split('/').collect();
        match segments.as_slice() {
            ["echo", ..] => {
                let mut text = format!("method {}\npath {path}\n", method(&request.method()));
                for (name, value) in request.headers().entries() {
                    text.push_str(&format!("header {name}: {}\n", String::from_utf8_lossy(&value)));
                }
                let body = read_body(request.consume().expect("the body is taken once"));
                text.push_str(&format!("body {} bytes\n", body.len()));
                respond(out, 200, text.as_bytes());
            }
            ["status", code] => respond(out, code.parse().unwrap_or(400), b""),
            ["sleep", ms] => {
                let ms: u64 = ms.parse().unwrap_or(0);
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, format!("slept {ms} ms\n").as_bytes());
            }
            ["big", kib] => {
                let kib: usize = kib.parse().unwrap_or(1);
                let response = OutgoingResponse::new(Fields::new());
                let body = response.body().expect("the body is taken once");
                ResponseOutparam::set(out, Ok(response));
                let stream = body.write().expect("the stream is taken once");
                for _ in 0..kib / 4 {
                    stream.blocking_write_and_flush(&[b'x'; 4096]).expect("writing");
                }
                stream.blocking_write_and_flush(&vec![b'x'; (kib % 4) * 1024]).expect("writing");
                drop(stream);
                OutgoingBody::finish(body, None).expect("finishing");
            }
            ["trap"] => panic!("the probe was asked to trap"),
            ["loop"] => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            ["noset"] => drop(out),
            [fan @ ("fan" | "fan-keep"), n, authority, rest @ ..] => {
                let target = format!("/{}", rest.join("/"));
                let pending: Vec<_> = (0..n.parse().unwrap_or(0))
                    .filter_map(|_| start(authority, &target).ok())
                    .collect();
                wasip2::clocks::monotonic_clock::subscribe_duration(500_000_000).block();
                let (mut waiting, mut refused, mut answered, mut other) = (0, 0, 0, 0);
                for request in &pending {
                    // `get` sees an answer only once its pollable was polled.
                    request.subscribe().ready();
                    match request.get() {
                        None => waiting += 1,
                        Some(Ok(Err(ErrorCode::ConnectionLimitReached))) => refused += 1,
                        Some(Ok(Ok(_))) => answered += 1,
                        Some(_) => other += 1,
                    }
                }
                let text = format!(
                    "pending {waiting} refused {refused} answered {answered} other {other}"
                );
                if *fan == "fan-keep" {
                    KEPT.with(|kept| kept.borrow_mut().extend(pending));
                }
                respond(out, 200, text.as_bytes());
            }
            ["fetch", authority, rest @ ..] => {
                let target = format!("/{}", rest.join("/"));
                match fetch(authority, &target) {
                    Ok((status, body)) => {
                        let mut text = format!("status {status}\n").into_bytes();
                        text.extend_from_slice(&body);
                        respond(out, 200, &text);
                    }
                    Err(error) => respond(out, 502, format!("{error:?}").as_bytes()),
                }
            }
            _ => respond(out, 404, b"no such probe"),
        }
    }
}

fn method(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

fn read_body(body: IncomingBody) -> Vec<u8> {
    let stream = body.stream().expect("the stream is taken once");
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    drop(stream);
    IncomingBody::finish(body);
    bytes
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())])
        .expect("a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("the stream is taken once");
    for chunk in body.chunks(4096) {
        stream.blocking_write_and_flush(chunk).expect("writing the body");
    }
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("finishing the body");
}

thread_local! {
    /// Requests `fan-keep` left running.
    static KEPT: std::cell::RefCell<Vec<FutureIncomingResponse>> = Default::default();
}

/// Start a GET to `http://authority/path`.
fn start(authority: &str, path: &str) -> Result<FutureIncomingResponse, ErrorCode> {
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).expect("a scheme");
    request.set_authority(Some(authority)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    request.set_path_with_query(Some(path)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    let body = request.body().expect("the body is taken once");
    OutgoingBody::finish(body, None).expect("an empty body");
    outgoing_handler::handle(request, None)
}

/// A GET to `http://authority/path`, waited for and read whole.
fn fetch(authority: &str, path: &str) -> Result<(u16, Vec<u8>), ErrorCode> {
    let pending = start(authority, path)?;
    pending.subscribe().block();
    let response = pending.get().expect("ready").expect("taken once")?;
    let status = response.status();
    let body = read_body(response.consume().expect("the body is taken once"));
    Ok((status, body))
}

wasip2::http::proxy::export!(Probe);
