//! What the test harness does to the queue: record what is relayed, hold
//! deliveries back, and drop, delay or duplicate an event on purpose.

use std::time::Duration;

use super::{Bus, BusError, QueuedEvent, queue_key};

impl Bus {
    /// Start keeping a record of every relayed event (for tests).
    pub fn start_recording(&self) {
        self.tap.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(Vec::new);
    }

    /// The events relayed since recording started, oldest first.
    pub fn recorded(&self) -> Vec<QueuedEvent> {
        self.tap.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default()
    }

    /// Hold deliveries back (`true`) or let them go again (for tests).
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, std::sync::atomic::Ordering::SeqCst);
        self.wake();
    }

    /// Queue entries of the event `id`, with their keys.
    fn entries_of(&self, id: &str) -> Result<Vec<(Vec<u8>, QueuedEvent)>, BusError> {
        let mut found = Vec::new();
        for entry in self.queue.range_from(std::ops::Bound::Unbounded) {
            let (key, value) = entry?;
            let event = QueuedEvent::decode(&value)?;
            if event.id == id {
                found.push((key, event));
            }
        }
        Ok(found)
    }

    /// Remove every queued delivery of event `id`; returns how many there were.
    pub fn drop_event(&self, id: &str) -> Result<usize, BusError> {
        let entries = self.entries_of(id)?;
        for (key, _) in &entries {
            self.queue.remove(key)?;
        }
        Ok(entries.len())
    }

    /// Hold every queued delivery of event `id` back for `delay`.
    pub fn delay_event(&self, id: &str, delay: Duration) -> Result<usize, BusError> {
        let entries = self.entries_of(id)?;
        for (key, event) in &entries {
            self.postpone(key, event.clone(), delay)?;
        }
        Ok(entries.len())
    }

    /// Queue `event` for `subscriber` once more, under the same id, at the
    /// end of its lane: a duplicate delivery, as a crash could cause.
    pub fn redeliver(&self, event: &QueuedEvent, subscriber: &str) -> Result<(), BusError> {
        let mut again = event.clone();
        again.attempts = 0;
        again.not_before = 0;
        let key = queue_key(subscriber, &event.topic, self.next_seq()?);
        self.queue.insert(&key, &again.encode())?;
        self.wake();
        Ok(())
    }
}
