//! Dead letters: events that used up their attempts, kept per subscriber
//! until replayed or discarded through the admin API.

use serde::Serialize;

use super::{Bus, BusError, QueuedEvent, queue_key, subscriber_of};

/// A dead letter, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The component the event could not be delivered to.
    pub subscriber: String,
    /// The event's id.
    pub id: String,
    /// The topic.
    pub topic: String,
    /// Who published it.
    pub source: String,
    /// The payload: its JSON when it is JSON, else its text, lossily.
    pub payload: serde_json::Value,
    /// When it was published, ms since the Unix epoch.
    pub published_at: u64,
    /// How many deliveries failed.
    pub attempts: u32,
    /// Why the last one failed.
    pub last_error: Option<String>,
}

pub(super) fn dead_key(subscriber: &str, id: &str) -> Vec<u8> {
    let mut key = subscriber.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

impl Bus {
    /// Every dead letter, for `subscriber` only when given.
    pub fn dead_letters(&self, subscriber: Option<&str>) -> Result<Vec<DeadLetter>, BusError> {
        let prefix = subscriber.map(|s| dead_key(s, "")).unwrap_or_default();
        let mut letters = Vec::new();
        for entry in self.dead.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let event = QueuedEvent::decode(&value)?;
            let payload = serde_json::from_slice(&event.payload).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&event.payload).into_owned())
            });
            letters.push(DeadLetter {
                subscriber: subscriber_of(&key).to_string(),
                id: event.id,
                topic: event.topic,
                source: event.source,
                payload,
                published_at: event.published_at,
                attempts: event.attempts,
                last_error: event.last_error,
            });
        }
        Ok(letters)
    }

    /// Queue a dead letter again, at the end of its lane, with a fresh
    /// count of attempts and the same event id.
    pub fn replay(&self, subscriber: &str, id: &str) -> Result<(), BusError> {
        let dead = dead_key(subscriber, id);
        let not_found = || BusError::NotFound { subscriber: subscriber.into(), id: id.into() };
        let value = self.dead.get(&dead)?.ok_or_else(not_found)?;
        let mut event = QueuedEvent::decode(&value)?;
        event.attempts = 0;
        event.not_before = 0;
        event.last_error = None;
        let key = queue_key(subscriber, &event.topic, self.next_seq()?);
        // Queued first, then no longer dead: a crash in between leaves it in
        // both (a second replay queues it once more), never in neither.
        self.queue.insert(&key, &event.encode())?;
        self.dead.remove(&dead)?;
        self.wake();
        Ok(())
    }

    /// Drop a dead letter for good.
    pub fn discard(&self, subscriber: &str, id: &str) -> Result<(), BusError> {
        let dead = dead_key(subscriber, id);
        if !self.dead.contains(&dead)? {
            return Err(BusError::NotFound { subscriber: subscriber.into(), id: id.into() });
        }
        self.dead.remove(&dead)?;
        Ok(())
    }
}
