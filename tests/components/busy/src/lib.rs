//! A guest that is busy on purpose: it burns CPU, loops, floods its output
//! and fans work out over the bus, to test that one component's load costs
//! only its own requests.
//!
//! HTTP (any first path segment, so the same component can be deployed
//! under several names and routes; the tests route it at `/busy` and, as a
//! second component, at `/caller`):
//! - `GET /busy/ok` answers 200 `{"ok":true}`;
//! - `GET /busy/burn/{ms}` computes for `ms` milliseconds of wall-clock time
//!   without a host call (it reads the clock only every 10,000 iterations),
//!   then answers 200 `{"burned_ms": ms}`;
//! - `GET /busy/loop` computes for ever without a host call (the deadline
//!   must stop it);
//! - `GET /busy/print/{lines}` prints `lines` one-byte lines (`x`) to stdout,
//!   answers 200 `{"printed": lines}`;
//! - `GET /busy/write/{kib}/{n}` makes `n` raw `wasi:io` writes to stdout of
//!   `kib` KiB of newlines each, ignoring `check-write` (a hostile guest's
//!   way to keep the host busy scanning lines in one host call), answers 200
//!   `{"written": n}` or 500 with the stream error;
//! - `GET /busy/random/{kib}/{n}` asks `wasi:random` for `kib` KiB of random
//!   bytes `n` times (another long host call), answers 200 `{"asked": n}`;
//! - `GET /busy/log/{lines}` logs `lines` messages `x` through the `log`
//!   import, answers 200 `{"logged": lines}`;
//! - `GET /busy/call/{name}/{ms}` calls component `name` through `services`
//!   with `GET /busy/burn/{ms}` and answers 200 `{"outcome": ...}`: `"ok"`
//!   for a 200, `"status N"` for another answer, else the SDK's
//!   [`describe`] of the error (`"timed out"`, `"unavailable: ..."`, ...);
//! - `GET /busy/touch/{mb}` allocates `mb` MB (10^6 bytes) and writes to
//!   every page of it, answers 200 `{"touched_mb": mb}`: a guest that uses
//!   much of its memory, and leaves the host to give it back; with
//!   `?hold=MS` it keeps it MS ms before answering;
//! - `POST /busy/publish/{n}/{ms}` publishes `n` events on `busy.burn` with
//!   payload `ms` (decimal text), answers 200 `{"published": n}`.
//!
//! Events: publishes and subscribes to `busy.burn`; handling one computes
//! for its payload's milliseconds, then succeeds.

use std::time::{Duration, Instant};

use pitstop_sdk::events::publish;
use pitstop_sdk::services::{call, describe};
use pitstop_sdk::{ApiError, Event, Events, Handler, Request, Response};
use serde_json::json;

struct Busy;

impl Handler for Busy {
    fn handle(request: Request) -> Response {
        pitstop_sdk::respond(route(&request))
    }
}

impl Events for Busy {
    const PUBLISHES: &'static [&'static str] = &["busy.burn"];
    const SUBSCRIBES: &'static [&'static str] = &["busy.burn"];

    fn handle_event(event: Event) -> Result<(), String> {
        let ms = number(&String::from_utf8_lossy(&event.payload)).map_err(|e| e.message)?;
        burn(Duration::from_millis(ms));
        Ok(())
    }
}

pitstop_sdk::export!(Busy);

fn route(request: &Request) -> Result<Response, ApiError> {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("GET", [_, "ok"]) => Ok(Response::json(200, &json!({ "ok": true }))),
        ("GET", [_, "burn", ms]) => {
            let ms = number(ms)?;
            burn(Duration::from_millis(ms));
            Ok(Response::json(200, &json!({ "burned_ms": ms })))
        }
        ("GET", [_, "loop"]) => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(step(n));
            }
        }
        ("GET", [_, "print", lines]) => {
            let lines = number(lines)?;
            // println! as an ordinary guest writes: a write the host refused
            // would panic here, so the host must drop the excess silently.
            for i in 0..lines {
                println!("x {i}");
            }
            Ok(Response::json(200, &json!({ "printed": lines })))
        }
        ("GET", [_, "write", kib, n]) => {
            let (kib, n) = (number(kib)?, number(n)?);
            let stdout = wasip2::cli::stdout::get_stdout();
            let newlines = vec![b'\n'; kib as usize * 1024];
            for _ in 0..n {
                stdout.write(&newlines).map_err(|e| ApiError::new(500, format!("{e:?}")))?;
            }
            Ok(Response::json(200, &json!({ "written": n })))
        }
        ("GET", [_, "touch", mb]) => {
            let mb = number(mb)?;
            let mut block = vec![0u8; mb as usize * 1_000_000];
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            std::hint::black_box(&block);
            // `?hold=MS`: keep it that long (a sleep, giving the turn up),
            // so that many instances hold their memory at once.
            if let Some(ms) = request.query.strip_prefix("hold=").and_then(|v| v.parse().ok()) {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            std::hint::black_box(&block);
            Ok(Response::json(200, &json!({ "touched_mb": mb })))
        }
        ("GET", [_, "random", kib, n]) => {
            let (kib, n) = (number(kib)?, number(n)?);
            for _ in 0..n {
                std::hint::black_box(wasip2::random::random::get_random_bytes(kib * 1024));
            }
            Ok(Response::json(200, &json!({ "asked": n })))
        }
        ("GET", [_, "log", lines]) => {
            let lines = number(lines)?;
            for i in 0..lines {
                pitstop_sdk::log::info(&format!("x {i}"));
            }
            Ok(Response::json(200, &json!({ "logged": lines })))
        }
        ("GET", [_, "call", name, ms]) => {
            let ms = number(ms)?;
            let outcome = match call(name, &Request::empty("GET", &format!("/busy/burn/{ms}"))) {
                Ok(response) if response.status == 200 => "ok".to_string(),
                Ok(response) => format!("status {}", response.status),
                Err(error) => describe(&error),
            };
            Ok(Response::json(200, &json!({ "outcome": outcome })))
        }
        ("POST", [_, "publish", n, ms]) => {
            let (n, ms) = (number(n)?, number(ms)?);
            for _ in 0..n {
                publish("busy.burn", ms.to_string().as_bytes())?;
            }
            Ok(Response::json(200, &json!({ "published": n })))
        }
        _ => Err(ApiError::not_found("no such route")),
    }
}

fn number(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request(format!("not a number: {text:?}")))
}

/// One round of arithmetic the optimiser cannot remove.
fn step(n: u64) -> u64 {
    n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407)
}

/// Compute for `period` of wall-clock time. The clock is a host call, so it
/// is read only every 10,000 rounds: between reads the guest is pure
/// computation, which only epoch interruption can preempt.
fn burn(period: Duration) {
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < period {
        for _ in 0..10_000 {
            n = std::hint::black_box(step(n));
        }
    }
    std::hint::black_box(n);
}
