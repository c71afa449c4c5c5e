//! A component that declares a malformed topic: the platform must refuse to
//! deploy it, naming the topic.

use pitstop_sdk::{Events, Handler, Request, Response};

struct BadTopics;

impl Handler for BadTopics {
    fn handle(_request: Request) -> Response {
        Response { status: 200, headers: Vec::new(), body: Vec::new() }
    }
}

impl Events for BadTopics {
    const PUBLISHES: &'static [&'static str] = &["Not A Topic"];
}

pitstop_sdk::export!(BadTopics);
