//! A bad new version, for the canary tests: any path ending in `/ok`
//! answers 200 `{"flaky":"ok"}`; any other answers 500 on 30% of requests
//! (at random) and 200 `{"flaky":"lucky"}` on the rest.

use pitstop_sdk::{Events, Handler, Header, Request, Response};

struct Flaky;

impl Handler for Flaky {
    fn handle(request: Request) -> Response {
        let mut byte = [0u8; 1];
        getrandom::fill(&mut byte).expect("the host gives randomness");
        let (status, body): (u16, &[u8]) = if request.path.ends_with("/ok") {
            (200, br#"{"flaky":"ok"}"#)
        } else if u32::from(byte[0]) * 100 < 30 * 256 {
            (500, br#"{"error":"flaky failed"}"#)
        } else {
            (200, br#"{"flaky":"lucky"}"#)
        };
        Response {
            status,
            headers: vec![Header { name: "content-type".into(), value: "application/json".into() }],
            body: body.to_vec(),
        }
    }
}

impl Events for Flaky {}

pitstop_sdk::export!(Flaky);
