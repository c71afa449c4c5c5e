//! A hostile guest: each route misbehaves in one way.
//!
//! - `GET /trap/ok` answers 200, proving the component itself still works;
//! - `GET /trap/panic` panics (a trap);
//! - `GET /trap/unreachable` executes `unreachable`;
//! - `GET /trap/loop` never returns (the deadline must stop it);
//! - `GET /trap/sleep/{ms}` answers after `ms` milliseconds, with when it
//!   started and ended (`started_ms`, `ended_ms`: wall clock, ms since the
//!   epoch), so a test sees the order in which the host ran its calls;
//! - `GET /trap/recurse` recurses without end (stack exhaustion);
//! - `GET /trap/grow` grows linear memory until the limit refuses;
//! - `GET /trap/alloc` allocates in a loop until allocation fails;
//! - `GET /trap/huge` answers a 4 MiB body;
//! - `GET /trap/status/{code}` answers with status `code` (e.g. 101, 1000);
//! - `GET /trap/headers/{count}/{bytes}` answers 200 with `count` headers
//!   whose values are `bytes` long;
//! - `GET /trap/hop` answers `hello` with headers that describe a
//!   connection (`connection: close`, `transfer-encoding: chunked`, a wrong
//!   `content-length`, `upgrade`) and one with a newline in its value: the
//!   connection is the gateway's, so none of them may reach the client;
//! - `GET /trap/self` calls itself through `services` until the platform
//!   refuses, then answers 508 with the refusal;
//! - `GET /trap/count` answers `{"served": n}`: how many requests this
//!   instance has served (a global the guest keeps), so a test sees
//!   whether instances are reused;
//! - `GET /trap/grow-by/{mib}` grows linear memory by `mib` MiB and answers;
//! - `GET /trap/whoami` answers the `pitstop-subject` it was called with
//!   (`null` without one);
//! - `GET /trap/relay` calls its own `/trap/whoami` through `services` and
//!   answers what that saw: the identity the platform passed on;
//! - `GET /trap/escape/{port}` tries to reach beyond its grants (files,
//!   environment, a TCP connection to `127.0.0.1:port`) and reports what it
//!   got.

use std::sync::atomic::{AtomicU64, Ordering};

use pitstop_sdk::{ApiError, Handler, Header, Request, Response};

/// Requests this instance has served: lives as long as the instance.
static SERVED: AtomicU64 = AtomicU64::new(0);

struct Trap;

impl Handler for Trap {
    fn handle(request: Request) -> Response {
        match request.segments().as_slice() {
            ["trap", "ok"] => Response::json(200, &serde_json::json!({ "ok": true })),
            ["trap", "count"] => {
                let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
                Response::json(200, &serde_json::json!({ "served": served }))
            }
            ["trap", "grow-by", mib] => {
                let pages = mib.parse::<usize>().unwrap_or(0) * 16;
                let grown = core::arch::wasm32::memory_grow(0, pages) != usize::MAX;
                Response::json(200, &serde_json::json!({ "grown": grown }))
            }
            ["trap", "whoami"] => {
                let subject = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("pitstop-subject"))
                    .map(|h| h.value.clone());
                Response::json(200, &serde_json::json!({ "subject": subject }))
            }
            ["trap", "relay"] => {
                let request = Request::empty("GET", "/trap/whoami");
                match pitstop_sdk::services::call("trap", &request) {
                    Ok(response) => response,
                    Err(error) => {
                        ApiError::new(502, pitstop_sdk::services::describe(&error)).into_response()
                    }
                }
            }
            ["trap", "panic"] => panic!("the trap component panics on purpose"),
            ["trap", "unreachable"] => std::process::abort(),
            ["trap", "loop"] => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            ["trap", "escape", port] => Response::json(200, &escape(port)),
            ["trap", "recurse"] => Response::json(200, &recurse(std::hint::black_box(1))),
            ["trap", "grow"] => {
                let mut pages = 0usize;
                // With the platform's trap-on-grow-failure this traps at the limit.
                while core::arch::wasm32::memory_grow(0, 16) != usize::MAX {
                    pages += 16;
                }
                Response::json(200, &serde_json::json!({ "grew_pages": pages }))
            }
            ["trap", "alloc"] => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            ["trap", "status", code] => Response {
                status: code.parse().unwrap_or(599),
                headers: vec![],
                body: b"odd status".to_vec(),
            },
            ["trap", "headers", count, bytes] => {
                let (count, bytes): (usize, usize) =
                    (count.parse().unwrap_or(0), bytes.parse().unwrap_or(0));
                let headers = (0..count)
                    .map(|i| pitstop_sdk::Header {
                        name: format!("x-h{i}"),
                        value: "v".repeat(bytes),
                    })
                    .collect();
                Response { status: 200, headers, body: b"many headers".to_vec() }
            }
            ["trap", "hop"] => {
                let headers = [
                    ("x-ok", "1"),
                    ("connection", "close"),
                    ("transfer-encoding", "chunked"),
                    ("content-length", "999"),
                    ("upgrade", "h2c"),
                    ("x-bad", "a\nb"),
                ];
                Response {
                    status: 200,
                    headers: headers
                        .iter()
                        .map(|(name, value)| Header {
                            name: name.to_string(),
                            value: value.to_string(),
                        })
                        .collect(),
                    body: b"hello".to_vec(),
                }
            }
            ["trap", "huge"] => {
                Response { status: 200, headers: vec![], body: vec![b'x'; 4 << 20] }
            }
            ["trap", "self"] => {
                let request = Request::empty("GET", "/trap/self");
                match pitstop_sdk::services::call("trap", &request) {
                    Ok(response) => response,
                    Err(error) => {
                        ApiError::new(508, pitstop_sdk::services::describe(&error)).into_response()
                    }
                }
            }
            ["trap", "sleep", ms] => {
                let ms: u64 = ms.parse().unwrap_or(0);
                let now = || {
                    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                    since.map_or(0, |d| d.as_millis() as u64)
                };
                let started_ms = now();
                std::thread::sleep(std::time::Duration::from_millis(ms));
                let answer = serde_json::json!({
                    "slept_ms": ms, "started_ms": started_ms, "ended_ms": now(),
                });
                Response::json(200, &answer)
            }
            _ => ApiError::not_found("no such route").into_response(),
        }
    }
}

impl pitstop_sdk::Events for Trap {}

pitstop_sdk::export!(Trap);

/// Recursion the optimiser cannot turn into a loop.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [depth; 64];
    frame[std::hint::black_box(3)] = recurse(std::hint::black_box(depth + 1));
    std::hint::black_box(frame).iter().sum()
}

/// What a guest gets when it reaches for things the platform does not grant.
fn escape(port: &str) -> serde_json::Value {
    let file = std::fs::read("/etc/passwd").map(|b| b.len()).map_err(|e| e.to_string());
    let dir = std::fs::read_dir(".").map(|d| d.count()).map_err(|e| e.to_string());
    let tcp = std::net::TcpStream::connect(format!("127.0.0.1:{port}"));
    let tcp = tcp.map(|_| ()).map_err(|e| e.to_string());
    serde_json::json!({
        "file": format!("{file:?}"),
        "dir": format!("{dir:?}"),
        "env": std::env::vars().count(),
        "tcp": format!("{tcp:?}"),
    })
}
