//! The relay: outbox entries, written by commits into the publishers'
//! keyspaces, become queue entries, one per subscriber, a fair share of
//! each outbox per pass.

use std::sync::Arc;

use super::{Bus, BusError, QueuedEvent, backlog, queue_key};
use crate::capabilities::bus::Topics;
use crate::storage::Batch;
use crate::storage::Keyspace;
use crate::storage::reserved::{OUTBOX_PREFIX, outbox_seq};

/// Outbox entries of one component relayed in one pass of the dispatcher
/// (see [`Bus::relay`]).
pub const RELAY_SHARE: usize = 64;

impl Bus {
    /// Move outbox entries to one queue entry per component subscribed to
    /// their topic now: `subscribers` are the active components' names and
    /// declared topics. The queue key carries the event's sequence number,
    /// so relaying an entry twice (a crash between the two steps) writes the
    /// same queue entry twice, not two entries.
    ///
    /// At most [`RELAY_SHARE`] entries of each outbox per call, and returns
    /// whether any outbox has more: a component publishing faster than the
    /// relay keeps up with would otherwise keep it in its own outbox for
    /// ever, and every other component's events would wait behind it. Each
    /// outbox gets the same share of every pass, and deliveries start
    /// between two passes.
    pub(crate) fn relay(&self, subscribers: &[(Arc<str>, Arc<Topics>)]) -> Result<bool, BusError> {
        let outboxes: Vec<Arc<dyn Keyspace>> = {
            let outboxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
            outboxes.values().cloned().collect()
        };
        let mut more = false;
        for keyspace in outboxes {
            for (relayed, entry) in keyspace.scan_prefix(OUTBOX_PREFIX).enumerate() {
                if relayed == RELAY_SHARE {
                    more = true;
                    break;
                }
                let (key, _) = entry?;
                // Read again, by key: an entry relayed (and removed) a
                // moment ago must not be relayed twice, or a copy could be
                // queued after the first was handled and finished, and be
                // handled again. A point read sees the removal; an iterator
                // over a tree that commits change under it need not (one
                // event was handled twice in a full test run, not seen
                // again in three; this closes the only path found to it).
                let Some(value) = keyspace.get(&key)? else { continue };
                let seq = outbox_seq(&key);
                let event = QueuedEvent::decode(&value)?;
                let topic = event.topic.clone();
                if let Some(tap) = self.tap.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                    tap.push(event);
                }
                let mut batch = Batch::default();
                for (name, _) in subscribers.iter().filter(|(_, t)| t.subscribes.contains(&topic)) {
                    batch.insert(queue_key(name, &topic, seq), value.clone());
                }
                let copies = batch.writes.len() as u64;
                self.queue.apply(batch)?;
                keyspace.remove(&key)?;
                if let Ok(event) = QueuedEvent::decode(&value) {
                    self.backlog.add(&event.source, backlog::cost(&event) * copies);
                }
            }
        }
        Ok(more)
    }
}
