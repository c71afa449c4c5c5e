//! One queued event, as stored (postcard, with the older layout still read).

use std::time::{SystemTime, UNIX_EPOCH};

use pitstop_gateway::TraceContext;
use serde::{Deserialize, Serialize};

/// One event on its way to one subscriber, as stored in the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedEvent {
    /// Unique per published event; kept across retries and replays.
    pub id: String,
    /// The topic it was published on.
    pub topic: String,
    /// The component that published it.
    pub source: String,
    /// What it carries.
    pub payload: Vec<u8>,
    /// When the publishing invocation committed, ms since the Unix epoch.
    pub published_at: u64,
    /// Deliveries tried so far.
    pub attempts: u32,
    /// Not to be delivered before this, ms since the Unix epoch.
    pub not_before: u64,
    /// Why the last delivery failed.
    pub last_error: Option<String>,
    /// The publisher's span, as a `traceparent`. Last, so that entries
    /// written before it existed still decode.
    pub traceparent: Option<String>,
}

/// A [`QueuedEvent`] as stored before events carried a trace.
#[derive(Deserialize)]
struct QueuedEventV1 {
    id: String,
    topic: String,
    source: String,
    payload: Vec<u8>,
    published_at: u64,
    attempts: u32,
    not_before: u64,
    last_error: Option<String>,
}

impl QueuedEvent {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding a queued event cannot fail")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        // postcard is not self-describing: an entry from before the trace
        // field ends early, and is read with the old layout.
        postcard::from_bytes(bytes).or_else(|error| {
            match postcard::from_bytes::<QueuedEventV1>(bytes) {
                Ok(v1) => Ok(QueuedEvent {
                    id: v1.id,
                    topic: v1.topic,
                    source: v1.source,
                    payload: v1.payload,
                    published_at: v1.published_at,
                    attempts: v1.attempts,
                    not_before: v1.not_before,
                    last_error: v1.last_error,
                    traceparent: None,
                }),
                Err(_) => Err(error),
            }
        })
    }

    /// The publisher's trace context, if it had a valid one.
    pub fn trace(&self) -> Option<TraceContext> {
        self.traceparent.as_deref().and_then(TraceContext::parse)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}
