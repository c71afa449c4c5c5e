//! A hostile guest: each route misbehaves in one way.
//!
//! - `GET /trap/ok` answers 200, proving the component itself still works;
//! - `GET /trap/panic` panics (a trap);
//! - `GET /trap/unreachable` executes `unreachable`;
//! - `GET /trap/loop` never returns (the deadline must stop it);
//! - `GET /trap/sleep/{ms}` answers after `ms` milliseconds;
//! - `GET /trap/escape` tries to reach beyond its grants (files, environment,
//!   network) and reports what it got.

use pitstop_sdk::{ApiError, Handler, Request, Response};

struct Trap;

impl Handler for Trap {
    fn handle(request: Request) -> Response {
        match request.segments().as_slice() {
            ["trap", "ok"] => Response::json(200, &serde_json::json!({ "ok": true })),
            ["trap", "panic"] => panic!("the trap component panics on purpose"),
            ["trap", "unreachable"] => std::process::abort(),
            ["trap", "loop"] => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            ["trap", "escape"] => Response::json(200, &escape()),
            ["trap", "sleep", ms] => {
                let ms: u64 = ms.parse().unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Response::json(200, &serde_json::json!({ "slept_ms": ms }))
            }
            _ => ApiError::not_found("no such route").into_response(),
        }
    }
}

pitstop_sdk::export!(Trap);

/// What a guest gets when it reaches for things the platform does not grant.
fn escape() -> serde_json::Value {
    let file = std::fs::read("/etc/passwd").map(|b| b.len()).map_err(|e| e.to_string());
    let dir = std::fs::read_dir(".").map(|d| d.count()).map_err(|e| e.to_string());
    let tcp = std::net::TcpStream::connect("127.0.0.1:1").map(|_| ()).map_err(|e| e.to_string());
    serde_json::json!({
        "file": format!("{file:?}"),
        "dir": format!("{dir:?}"),
        "env": std::env::vars().count(),
        "tcp": format!("{tcp:?}"),
    })
}
