//! Publishing and receiving events.
//!
//! Every service implements [`Events`]; the defaults declare no topics, so a
//! service that neither publishes nor subscribes writes `impl Events for S {}`.
//! A service that does lists its topics and handles what arrives:
//!
//! ```ignore
//! impl pitstop_sdk::Events for Orders {
//!     const PUBLISHES: &'static [&'static str] = &["order.confirmed"];
//!     const SUBSCRIBES: &'static [&'static str] = &["user.created"];
//!
//!     fn handle_event(event: Event) -> Result<(), String> {
//!         // Writes made here commit together with the acknowledgement.
//!         Ok(())
//!     }
//! }
//! ```
//!
//! [`publish_json`] queues an event; it is stored with the invocation's
//! keyvalue writes when the invocation succeeds and dropped when it fails.

use serde::Serialize;

use crate::ApiError;
pub use crate::bindings::exports::pitstop::platform::events::Event;
use crate::bindings::exports::pitstop::platform::events::{Guest, Topics};
pub use crate::bindings::pitstop::platform::bus::{Error as BusError, publish, publish_delayed};

/// What a service publishes and subscribes to, and how it handles events.
pub trait Events {
    /// Topics this service may publish; publishing any other is an error.
    const PUBLISHES: &'static [&'static str] = &[];
    /// Topics delivered to [`Events::handle_event`].
    const SUBSCRIBES: &'static [&'static str] = &[];

    /// Handle one delivery. `Err` (or a panic) discards the handler's writes
    /// and has the platform retry the event later.
    fn handle_event(event: Event) -> Result<(), String> {
        Err(format!("no handler for topic {:?}", event.topic))
    }
}

impl<T: Events> Guest for T {
    fn declare() -> Topics {
        let owned = |topics: &[&str]| topics.iter().map(|t| t.to_string()).collect();
        Topics { publishes: owned(T::PUBLISHES), subscribes: owned(T::SUBSCRIBES) }
    }

    fn handle_event(event: Event) -> Result<(), String> {
        <T as Events>::handle_event(event)
    }
}

impl From<BusError> for ApiError {
    fn from(error: BusError) -> Self {
        let message = match error {
            BusError::InvalidTopic(m) => format!("invalid topic: {m}"),
            BusError::UndeclaredTopic(m) => format!("undeclared topic: {m}"),
            BusError::TooLarge(m) => format!("event too large: {m}"),
        };
        ApiError::internal(message)
    }
}

/// Publish `value` as JSON on `topic` when this invocation commits.
pub fn publish_json<T: Serialize>(topic: &str, value: &T) -> Result<(), ApiError> {
    publish(topic, &crate::kv::to_json(value))?;
    Ok(())
}

/// Publish `value` as JSON on `topic`, delivered `delay_ms` after the commit.
pub fn publish_json_delayed<T: Serialize>(
    topic: &str,
    value: &T,
    delay_ms: u64,
) -> Result<(), ApiError> {
    publish_delayed(topic, &crate::kv::to_json(value), delay_ms)?;
    Ok(())
}

impl Event {
    /// The payload parsed as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| format!("event {} on {}: bad payload: {e}", self.id, self.topic))
    }
}
