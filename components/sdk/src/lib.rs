//! Guest-side SDK for pitstop services.
//!
//! A service is a `cdylib` crate that depends on this one and:
//!
//! 1. implements [`Handler`] for a type, turning a [`Request`] into a [`Response`];
//! 2. implements [`Events`] for it: empty for a service without events, or
//!    naming the topics it publishes and subscribes to (see [`events`]);
//! 3. calls [`export!`] with that type;
//! 4. builds with `cargo build --release --target wasm32-wasip2` (or `cargo component build`).
//!
//! ```ignore
//! use pitstop_sdk::{ApiError, Handler, Request, Response};
//!
//! struct Hello;
//!
//! impl Handler for Hello {
//!     fn handle(request: Request) -> Response {
//!         match (request.method.as_str(), request.segments().as_slice()) {
//!             ("GET", ["hello"]) => Response::json(200, &serde_json::json!({"hello": "world"})),
//!             (_, ["hello"]) => ApiError::method_not_allowed().into_response(),
//!             _ => ApiError::not_found("no such route").into_response(),
//!         }
//!     }
//! }
//!
//! impl pitstop_sdk::Events for Hello {}
//!
//! pitstop_sdk::export!(Hello);
//! ```
//!
//! The helpers here add JSON bodies, typed keyvalue access, ids and service
//! calls on top of the raw WIT bindings, which stay available in [`bindings`].

pub mod access;
pub mod bindings;
pub mod events;
pub mod headers;
mod http;
pub use http::respond;
pub mod id;
pub mod kv;
pub mod log;
pub mod services;
#[cfg(feature = "testing")]
pub mod testing;

pub use bindings::export;
pub use bindings::exports::pitstop::platform::handler::Guest as Handler;
pub use bindings::pitstop::platform::types::{Header, Request, Response};
pub use events::{Event, Events};
pub use http::ApiError;
