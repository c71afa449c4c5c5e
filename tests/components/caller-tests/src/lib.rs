//! Wasm-level tests that call a real component: run with
//! `pitstop test-runner --component kvprobe=PATH`, their `services` calls
//! that no stub answers reach the real `kvprobe`.

use pitstop_sdk::{Events, Handler, Request, Response};

struct Caller;

impl Handler for Caller {
    fn handle(_request: Request) -> Response {
        Response { status: 204, headers: Vec::new(), body: Vec::new() }
    }
}

impl Events for Caller {}

pitstop_sdk::export!(Caller);

#[cfg(test)]
mod tests {
    use pitstop_sdk::services::call;
    use pitstop_sdk::testing;

    use super::*;

    #[test]
    fn unstubbed_calls_reach_the_real_component() {
        let put = Request { body: b"42".to_vec(), ..Request::empty("PUT", "/kv/kv/answer") };
        assert_eq!(call("kvprobe", &put).expect("kvprobe is loaded").status, 200);
        let read = call("kvprobe", &Request::empty("GET", "/kv/kv/answer")).unwrap();
        assert_eq!(read.body, b"42", "the real component kept it in its own keyspace");
        assert!(call("nobody", &Request::empty("GET", "/")).is_err(), "not loaded: not-found");
    }

    #[test]
    fn a_stub_takes_precedence() {
        testing::stub_json("kvprobe", "GET", "/kv/kv/", 200, &"stubbed");
        let read = call("kvprobe", &Request::empty("GET", "/kv/kv/answer")).unwrap();
        assert_eq!(read.body, br#""stubbed""#);
        testing::clear_stubs();
    }
}
