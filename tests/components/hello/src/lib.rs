//! The smallest service: `GET /hello` answers a constant. The benchmark's
//! measure of what the platform itself costs per request.

use pitstop_sdk::{Events, Handler, Header, Request, Response};

struct Hello;

impl Handler for Hello {
    fn handle(_request: Request) -> Response {
        Response {
            status: 200,
            headers: vec![Header { name: "content-type".into(), value: "application/json".into() }],
            body: br#"{"hello":"world"}"#.to_vec(),
        }
    }
}

impl Events for Hello {}

pitstop_sdk::export!(Hello);
