//! Records the payload of every event the built-in services publish, to
//! check them against their documentation (docs/events.md).
//!
//! - `GET /recorded/{topic}` -> 200 `[payload, ...]`: the payloads handled on
//!   `topic`, parsed as JSON, in the order their events were published.
//!
//! Events: subscribes to every topic the user, order and payment services
//! publish.

use pitstop_sdk::{ApiError, Event, Events, Handler, Request, Response, kv, respond};
use serde_json::Value;

struct Recorder;

impl Handler for Recorder {
    fn handle(request: Request) -> Response {
        respond(match request.segments().as_slice() {
            [_, topic] => recorded(topic),
            _ => Err(ApiError::not_found("GET /recorded/{topic}")),
        })
    }
}

impl Events for Recorder {
    const SUBSCRIBES: &'static [&'static str] = &[
        "user.created",
        "order.created",
        "order.payment-requested",
        "order.confirmed",
        "order.failed",
        "order.compensated",
        "order.timeout",
        "payment.completed",
        "payment.refunded",
    ];

    fn handle_event(event: Event) -> Result<(), String> {
        // Keyed by publish time, then id: reads back in publishing order.
        let key = format!("seen/{}/{:020}/{}", event.topic, event.published_at, event.id);
        kv::set(&key, &event.payload).map_err(|e| format!("{e:?}"))
    }
}

pitstop_sdk::export!(Recorder);

fn recorded(topic: &str) -> Result<Response, ApiError> {
    let mut payloads = Vec::new();
    for key in kv::all_keys(&format!("seen/{topic}/"))? {
        let bytes = kv::get(&key)?.unwrap_or_default();
        let payload: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::internal(format!("{key} is not JSON: {e}")))?;
        payloads.push(payload);
    }
    Ok(Response::json(200, &payloads))
}
