//! Helpers for a component's wasm-level tests, run by `pitstop test-runner`
//! (`cargo test --target wasm32-wasip2`). Needs the `testing` feature.
//!
//! ```ignore
//! use pitstop_sdk::testing;
//!
//! #[test]
//! fn registering_publishes_user_created() {
//!     testing::clear_published();
//!     let response = route(&Request::with_json("POST", "/users", &json!({...})));
//!     assert_eq!(response.status, 201);
//!     assert_eq!(testing::published_topics(), ["user.created"]);
//! }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::bindings::pitstop::platform::testing::{
    PublishedEvent, calls, clear_published, clear_stubs, published, stub_service,
};
use crate::services::CallError;
use crate::{Request, Response};

/// The topics published so far, in order.
pub fn published_topics() -> Vec<String> {
    published().into_iter().map(|e| e.topic).collect()
}

/// The payloads published on `topic` so far, parsed as JSON.
pub fn published_json<T: DeserializeOwned>(topic: &str) -> Vec<T> {
    published()
        .into_iter()
        .filter(|e| e.topic == topic)
        .map(|e| serde_json::from_slice(&e.payload).expect("a JSON payload"))
        .collect()
}

/// Answer `method` calls to `service` under `path_prefix` with `status` and
/// `body` as JSON.
pub fn stub_json(
    service: &str,
    method: &str,
    path_prefix: &str,
    status: u16,
    body: &impl Serialize,
) {
    stub_service(service, method, path_prefix, Ok(&Response::json(status, body)));
}

/// Make `method` calls to `service` under `path_prefix` fail with `error`.
pub fn stub_failure(service: &str, method: &str, path_prefix: &str, error: CallError) {
    stub_service(service, method, path_prefix, Err(&error));
}

/// The calls made to `service` so far, oldest first.
pub fn calls_to(service: &str) -> Vec<Request> {
    calls(service)
}

/// `request` with the headers the platform sets for a verified `subject`
/// holding `roles` (e.g. `&["admin"]`), as the gateway would deliver it.
pub fn as_subject(mut request: Request, subject: &str, roles: &[&str]) -> Request {
    use crate::headers::{ROLES, SUBJECT};
    request.headers.push(crate::Header { name: SUBJECT.into(), value: subject.into() });
    if !roles.is_empty() {
        request.headers.push(crate::Header { name: ROLES.into(), value: roles.join(" ") });
    }
    request
}

/// `request` as a call from the component `caller` serving no subject (an
/// event handler's, a saga timeout's).
pub fn as_caller(mut request: Request, caller: &str) -> Request {
    request
        .headers
        .push(crate::Header { name: crate::headers::CALLER.into(), value: caller.into() });
    request
}
