//! Reads and writes its keyspace as told, to show what a component can see.
//!
//! - `PUT /{prefix}/kv/{key}` stores the body under `key`;
//! - `GET /{prefix}/kv/{key}` answers the value, or 404;
//! - `GET /{prefix}/keys?{prefix}` lists every key starting with the query;
//! - `POST /{prefix}/incr/{key}` increments `key` and answers the new value;
//! - `POST /{prefix}/fill/{tag}/{n}/{kib}` sets `n` keys `{tag}-0`, ... of
//!   `kib` KiB each in one invocation (a guest filling its keyspace faster
//!   than one write at a time), answers `{"stored": n}` or the first error;
//! - `{any method} /{prefix}/headers` answers the request headers it got, as
//!   a JSON list of `[name, value]` pairs;
//! - `GET /{prefix}/wasi-http-fields` builds `wasi:http` header fields (so the
//!   component imports `wasi:http/types`) and answers the one it made;
//! - `GET /{prefix}/relay/{callee}` calls `callee`'s `GET /{prefix}/headers`
//!   through `services` with forged platform headers (`pitstop-subject:
//!   admin`, `pitstop-auth`, `pitstop-claims`, `pitstop-caller`, ...) and
//!   answers what the callee answered: what a callee can be made to believe.
//! - `POST /{prefix}/cas/{key}/{ms}[?call={name}|?fetch={authority}]` reads `key` as a decimal
//!   counter (absent is 0), compare-and-swaps it to one more, then waits
//!   `ms` milliseconds before answering `{"from": n, "swapped": bool}` (and
//!   committing): a window for a concurrent commit to win; with `call`,
//!   it first calls component `name` (`GET /{name}`, answer ignored), so the
//!   invocation has made a `services` call and cannot be run again; with
//!   `fetch`, it first sends `GET http://{authority}/` over `wasi:http`
//!   (503 if that fails), an effect outside it too. Each
//!   run prints `cas run on {key}` to stdout, so the host's log counts runs.

use pitstop_sdk::{ApiError, Handler, Request, Response, kv};

struct Probe;

impl Handler for Probe {
    fn handle(request: Request) -> Response {
        pitstop_sdk::respond(route(&request))
    }
}

fn route(request: &Request) -> Result<Response, ApiError> {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("PUT", [_, "kv", key]) => {
            kv::set(key, &request.body)?;
            Ok(Response::json(200, &serde_json::json!({ "stored": key })))
        }
        ("GET", [_, "kv", key]) => match kv::get(key)? {
            Some(value) => Ok(Response { status: 200, headers: vec![], body: value }),
            None => Err(ApiError::not_found("no such key")),
        },
        ("GET", [_, "keys"]) => {
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = kv::list_keys(&request.query, cursor.as_deref(), 2)?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            Ok(Response::json(200, &keys))
        }
        ("POST", [_, "incr", key]) => Ok(Response::json(200, &kv::increment(key, 1)?)),
        ("POST", [_, "fill", tag, n, kib]) => {
            let (n, kib) = (number(n)?, number(kib)?);
            let value = vec![b'x'; kib as usize * 1024];
            for i in 0..n {
                kv::set(&format!("{tag}-{i}"), &value)?;
            }
            Ok(Response::json(200, &serde_json::json!({ "stored": n })))
        }
        (_, [_, "headers"]) => {
            let headers: Vec<(&str, &str)> =
                request.headers.iter().map(|h| (h.name.as_str(), h.value.as_str())).collect();
            Ok(Response::json(200, &headers))
        }
        ("GET", [prefix, "relay", callee]) => {
            let mut call = Request::empty("GET", &format!("/{prefix}/headers"));
            for (name, value) in [
                ("pitstop-subject", "admin"),
                ("pitstop-auth", "jwt"),
                ("pitstop-claims", r#"{"sub":"admin","role":"god"}"#),
                ("pitstop-caller", "payment"),
                ("pitstop-anything", "forged"),
            ] {
                call.headers.push(pitstop_sdk::Header { name: name.into(), value: value.into() });
            }
            pitstop_sdk::services::call(callee, &call)
                .map_err(|e| ApiError::new(502, pitstop_sdk::services::describe(&e)))
        }
        ("POST", [_, "cas", key, ms]) => {
            println!("cas run on {key}");
            if let Some(callee) = request.query_param("call") {
                let _ = pitstop_sdk::services::call(callee, &Request::empty("GET", "/"));
            }
            if let Some(authority) = request.query_param("fetch") {
                get(authority).map_err(|e| ApiError::unavailable(format!("fetch: {e:?}")))?;
            }
            let from = match kv::get(key)? {
                Some(bytes) => number(&String::from_utf8_lossy(&bytes))?,
                None => 0,
            };
            let expected = (from > 0).then(|| from.to_string().into_bytes());
            let next = Some((from + 1).to_string().into_bytes());
            let swapped = kv::compare_and_swap(key, expected.as_deref(), next.as_deref())?;
            // Between the swap and the commit: where a concurrent commit
            // makes this one's swap stale.
            std::thread::sleep(std::time::Duration::from_millis(number(ms)?));
            Ok(Response::json(200, &serde_json::json!({ "from": from, "swapped": swapped })))
        }
        // A service that also imports wasi:http/types (as StarlingMonkey's
        // JavaScript services do): the header fields round-trip.
        ("GET", [_, "wasi-http-fields"]) => {
            let fields = wasip2::http::types::Fields::from_list(&[(
                "x-made-by".to_string(),
                b"wasi:http".to_vec(),
            )])
            .map_err(|e| ApiError::bad_request(format!("{e:?}")))?;
            let entries = fields.entries();
            let (name, value) = entries.first().cloned().unwrap_or_default();
            let line = format!("{name}: {}", String::from_utf8_lossy(&value));
            Ok(Response { status: 200, headers: vec![], body: line.into_bytes() })
        }
        _ => Err(ApiError::not_found("no such route")),
    }
}

impl pitstop_sdk::Events for Probe {}

pitstop_sdk::export!(Probe);

fn number(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request(format!("not a number: {text:?}")))
}

/// A `wasi:http` GET to `http://authority/`, waited for: an effect outside
/// the invocation, as a services call is.
fn get(authority: &str) -> Result<u16, wasip2::http::types::ErrorCode> {
    use wasip2::http::types::{ErrorCode, Fields, OutgoingBody, OutgoingRequest, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).expect("a scheme");
    request.set_authority(Some(authority)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    request.set_path_with_query(Some("/")).expect("a path");
    let body = request.body().expect("the body is taken once");
    OutgoingBody::finish(body, None).expect("an empty body");
    let pending = wasip2::http::outgoing_handler::handle(request, None)?;
    pending.subscribe().block();
    let response = pending.get().expect("ready").expect("taken once")?;
    Ok(response.status())
}
