//! A hostile guest: each route misbehaves in one way.
//!
//! - `GET /trap/ok` answers 200, proving the component itself still works;
//! - `GET /trap/panic` panics (a trap);
//! - `GET /trap/unreachable` executes `unreachable`;
//! - `GET /trap/loop` never returns (the deadline must stop it).

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
            _ => ApiError::not_found("no such route").into_response(),
        }
    }
}

pitstop_sdk::export!(Trap);
