//! What each publisher's events hold in the queue and the dead letters.
//!
//! An event waiting for its subscribers, or dead-lettered at one of them,
//! is stored by the platform, not in the publisher's keyspace, so without
//! this a component with a 1 MiB quota made 125 MiB of dead letters in 20
//! requests. Each queue entry and dead letter counts its topic and payload
//! against its publisher (the event's `source`), and the publisher's
//! keyspace quota covers its keyspace and this together
//! ([`crate::runtime::commit`]).
//!
//! Counted from the queue and the dead letters when the bus opens, then
//! kept up to date as entries are relayed, handled, discarded or
//! forgotten. (A retry or a dead-lettering moves an entry, which changes
//! nothing here.)

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Mutex;

use super::QueuedEvent;
use crate::storage::Keyspace;

/// Bytes of queued and dead-lettered events, per publisher.
#[derive(Default)]
pub(super) struct Backlog {
    bytes: Mutex<HashMap<String, u64>>,
}

/// What one queue entry or dead letter counts against its publisher.
pub(super) fn cost(event: &QueuedEvent) -> u64 {
    (event.topic.len() + event.payload.len()) as u64
}

impl Backlog {
    /// The backlog stored in `queue` and `dead` now.
    pub(super) fn count(queue: &dyn Keyspace, dead: &dyn Keyspace) -> Self {
        let backlog = Backlog::default();
        for keyspace in [queue, dead] {
            for (_, value) in keyspace.range_from(Bound::Unbounded).flatten() {
                if let Ok(event) = QueuedEvent::decode(&value) {
                    backlog.add(&event.source, cost(&event));
                }
            }
        }
        backlog
    }

    /// `bytes` more of `source`'s.
    pub(super) fn add(&self, source: &str, bytes: u64) {
        let mut all = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        *all.entry(source.to_string()).or_default() += bytes;
    }

    /// `bytes` of `source`'s gone.
    pub(super) fn remove(&self, source: &str, bytes: u64) {
        let mut all = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = all.get_mut(source) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                all.remove(source);
            }
        }
    }

    /// The entry `value` is gone: what it counted goes with it.
    pub(super) fn removed(&self, value: &[u8]) {
        if let Ok(event) = QueuedEvent::decode(value) {
            self.remove(&event.source, cost(&event));
        }
    }

    /// Bytes of `source`'s events queued or dead-lettered.
    pub(super) fn of(&self, source: &str) -> u64 {
        self.bytes.lock().unwrap_or_else(|p| p.into_inner()).get(source).copied().unwrap_or(0)
    }
}
