//! A component whose wasm-level tests fail on purpose: proof that a failing
//! test fails `cargo test --target wasm32-wasip2` under `pitstop test-runner`.

use pitstop_sdk::{Events, Handler, Request, Response, kv};

struct Counter;

impl Handler for Counter {
    fn handle(_request: Request) -> Response {
        let n = kv::increment("n", 1).unwrap_or_default();
        Response::json(200, &n)
    }
}

impl Events for Counter {}

pitstop_sdk::export!(Counter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_one() {
        let first = Counter::handle(Request::empty("GET", "/"));
        assert_eq!(first.body, b"1");
    }

    #[test]
    fn zzz_runs_after_the_failure() {
        let first = Counter::handle(Request::empty("GET", "/"));
        assert_eq!(first.body, b"1", "each test has a keyspace of its own");
    }

    #[test]
    fn zz_is_wrong_on_purpose() {
        let second = Counter::handle(Request::empty("GET", "/"));
        assert_eq!(second.body, b"3", "the deliberate failure");
    }
}
