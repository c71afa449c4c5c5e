//! The `bus` capability: topic names and their rule, the topics a version
//! declared, and the publish buffer of one invocation ([`BusCtx`]).
//!
//! Publishing only buffers the event in the invocation. When the invocation
//! succeeds, [`crate::runtime::commit`] writes it to the outbox in the component's
//! own keyspace, in the same atomic batch as the invocation's keyvalue
//! writes: nothing is published by an invocation that failed, and nothing
//! committed is lost by a crash. What happens next (relay, lanes, retries,
//! dead letters) is [`crate::events::queue`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use wasmtime::component::{HasSelf, Linker};

use pitstop_gateway::TraceContext;

use crate::bindings::bus::{self, Error};
use crate::resilience::memory::{Charge, ComponentMemory};

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;
/// Largest payload of one event.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Most events one invocation may publish.
pub const MAX_EVENTS_PER_INVOCATION: usize = 100;
/// Longest delay `publish-delayed` accepts: a week.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A topic name that breaks the rule of [`check_topic`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a topic: use 1-{MAX_TOPIC_LEN} bytes of dot-separated words of a-z, 0-9 and \
     '-', each starting with a letter"
)]
pub struct InvalidTopic(pub String);

/// Whether `topic` is 1-128 bytes of dot-separated `[a-z][a-z0-9-]*` words.
pub fn check_topic(topic: &str) -> Result<(), InvalidTopic> {
    let well_formed = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic.split('.').all(crate::naming::is_word);
    if well_formed { Ok(()) } else { Err(InvalidTopic(topic.to_string())) }
}

/// The topics one deployed version declared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Topics {
    /// It may publish these.
    pub publishes: BTreeSet<String>,
    /// These are delivered to it.
    pub subscribes: BTreeSet<String>,
}

impl Topics {
    /// What a component's `declare` returned, every topic checked with
    /// [`check_topic`].
    pub fn declared(
        publishes: Vec<String>,
        subscribes: Vec<String>,
    ) -> Result<Topics, InvalidTopic> {
        let checked = |list: Vec<String>| -> Result<BTreeSet<String>, InvalidTopic> {
            list.into_iter().map(|topic| check_topic(&topic).map(|()| topic)).collect()
        };
        Ok(Topics { publishes: checked(publishes)?, subscribes: checked(subscribes)? })
    }
}

/// An event published by an invocation, waiting for its commit.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where it goes.
    pub topic: String,
    /// What it carries.
    pub payload: Vec<u8>,
    /// How long after the commit it becomes deliverable.
    pub delay: Duration,
    /// The publishing invocation's span: the delivery continues its trace.
    pub trace: TraceContext,
}

/// Per-invocation state of the `bus` capability.
pub struct BusCtx {
    topics: Arc<Topics>,
    outgoing: Vec<Outgoing>,
    trace: TraceContext,
    /// The component's host memory, charged in `held` for the events
    /// waiting for the commit.
    memory: Arc<ComponentMemory>,
    held: Charge,
    /// Bytes of events (topic and payload) the component's keyspace quota
    /// has room for, beside its keyspace and its events queued or
    /// dead-lettered; and what this invocation published of it.
    room: u64,
    published: u64,
}

impl BusCtx {
    /// A context allowing the topics `topics` declares, for an invocation
    /// whose span is `trace`.
    pub fn new(topics: Arc<Topics>, trace: TraceContext, memory: Arc<ComponentMemory>) -> Self {
        BusCtx {
            topics,
            outgoing: Vec::new(),
            trace,
            held: memory.empty(),
            memory,
            room: u64::MAX,
            published: 0,
        }
    }

    /// Publish at most `bytes` of events (topics and payloads): what the
    /// keyspace quota has room for.
    pub fn with_room(mut self, bytes: u64) -> Self {
        self.room = bytes;
        self
    }

    /// The host memory charged for the events, leaving none charged: the
    /// commit holds it until it is done with them.
    pub fn take_charge(&mut self) -> Charge {
        std::mem::replace(&mut self.held, self.memory.empty())
    }

    /// The buffered events.
    pub fn outgoing(&self) -> &[Outgoing] {
        &self.outgoing
    }

    /// The buffered events, leaving none behind.
    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outgoing)
    }

    fn buffer(&mut self, topic: String, payload: Vec<u8>, delay: Duration) -> Result<(), Error> {
        check_topic(&topic).map_err(|e| Error::InvalidTopic(e.to_string()))?;
        if !self.topics.publishes.contains(&topic) {
            return Err(Error::UndeclaredTopic(format!(
                "{topic:?} is not among the topics this component declares it publishes"
            )));
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::TooLarge(format!(
                "payload is {} bytes, the limit is {MAX_PAYLOAD_BYTES}",
                payload.len()
            )));
        }
        if self.outgoing.len() >= MAX_EVENTS_PER_INVOCATION {
            return Err(Error::TooLarge(format!(
                "one invocation may publish at most {MAX_EVENTS_PER_INVOCATION} events"
            )));
        }
        let bytes = (topic.len() + payload.len()) as u64;
        if self.published + bytes > self.room {
            return Err(Error::TooLarge(format!(
                "{bytes} more bytes of events do not fit the component's keyspace quota \
                 (max_keyspace_bytes), which also holds its events waiting for delivery or \
                 dead-lettered: {} bytes of room were left; replay or discard its dead letters",
                self.room - self.published.min(self.room)
            )));
        }
        let held = self.held.grow("an event waiting for the commit", bytes);
        held.map_err(|refused| Error::TooLarge(refused.to_string()))?;
        self.published += bytes;
        self.outgoing.push(Outgoing { topic, payload, delay, trace: self.trace });
        Ok(())
    }
}

/// Add the capability to `linker`.
///
/// Generic over the store's data, as wasmtime's own capability crates are:
/// `get` finds this capability's context in it, so this module need not
/// know the type that holds every context.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut BusCtx,
) -> wasmtime::Result<()> {
    bus::add_to_linker::<T, HasSelf<BusCtx>>(linker, get)
}

impl bus::Host for BusCtx {
    #[tracing::instrument(level = "debug", name = "bus.publish", skip_all, fields(topic = %topic))]
    async fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), Error> {
        self.buffer(topic, payload, Duration::ZERO)
    }

    #[tracing::instrument(level = "debug", name = "bus.publish-delayed", skip_all, fields(topic = %topic))]
    async fn publish_delayed(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        delay_ms: u64,
    ) -> Result<(), Error> {
        let delay = Duration::from_millis(delay_ms);
        if delay > MAX_DELAY {
            return Err(Error::TooLarge(format!(
                "a delay of {delay_ms} ms is longer than the limit of {} ms",
                MAX_DELAY.as_millis()
            )));
        }
        self.buffer(topic, payload, delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for good in ["user.created", "a", "order.saga-timeout", "x1.y2.z3"] {
            assert!(check_topic(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        for bad in ["", "User.created", "user..created", ".user", "user.", "1user", "a b", &long] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }
}
