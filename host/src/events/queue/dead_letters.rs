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
    /// The payload: its JSON when it is JSON, else its text, lossily. In a
    /// listing, a payload over [`PREVIEW_BYTES`] is cut to that many bytes
    /// of text (`truncated`); the letter itself has all of it.
    pub payload: serde_json::Value,
    /// The payload's size in bytes.
    pub payload_bytes: usize,
    /// Whether `payload` is cut short.
    pub truncated: bool,
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

/// Most bytes of a payload a listing shows.
pub const PREVIEW_BYTES: usize = 4096;

/// Most dead letters one page of a listing holds.
pub const MAX_PAGE: usize = 1000;

/// One page of dead letters, and where the next starts.
#[derive(Debug, Serialize)]
pub struct DeadLetterPage {
    /// The letters, by subscriber, then event id.
    pub dead_letters: Vec<DeadLetter>,
    /// The `after` of the next page (`subscriber/id` of this page's last
    /// letter); `None` on the last page.
    pub next: Option<String>,
}

fn letter(key: &[u8], event: QueuedEvent, preview: Option<usize>) -> DeadLetter {
    let size = event.payload.len();
    let cut = preview.filter(|limit| size > *limit);
    let payload = match cut {
        Some(limit) => {
            serde_json::Value::String(String::from_utf8_lossy(&event.payload[..limit]).into_owned())
        }
        None => serde_json::from_slice(&event.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&event.payload).into_owned())
        }),
    };
    DeadLetter {
        subscriber: subscriber_of(key).to_string(),
        id: event.id,
        topic: event.topic,
        source: event.source,
        payload,
        payload_bytes: size,
        truncated: cut.is_some(),
        published_at: event.published_at,
        attempts: event.attempts,
        last_error: event.last_error,
    }
}

impl Bus {
    /// Up to `limit` dead letters (at most [`MAX_PAGE`]), for `subscriber`
    /// only when given, after the letter `after` (`subscriber/id`) when
    /// given; payloads cut to [`PREVIEW_BYTES`]. A page is bounded whatever
    /// the letters hold: the console polls it every 2 s.
    pub fn dead_letters(
        &self,
        subscriber: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage, BusError> {
        let prefix = subscriber.map(|s| dead_key(s, "")).unwrap_or_default();
        let limit = limit.clamp(1, MAX_PAGE);
        let start = match after.and_then(|a| a.split_once('/')) {
            Some((subscriber, id)) => dead_key(subscriber, id),
            None => prefix.clone(),
        };
        let entries = self.dead.range_from(std::ops::Bound::Included(&start));
        let mut letters = Vec::new();
        let mut next = None;
        for entry in entries {
            let (key, value) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            if key == start && after.is_some() {
                continue;
            }
            if letters.len() == limit {
                let last: &DeadLetter = letters.last().expect("limit is at least 1");
                next = Some(format!("{}/{}", last.subscriber, last.id));
                break;
            }
            letters.push(letter(&key, QueuedEvent::decode(&value)?, Some(PREVIEW_BYTES)));
        }
        Ok(DeadLetterPage { dead_letters: letters, next })
    }

    /// One dead letter, its payload whole.
    pub fn dead_letter(&self, subscriber: &str, id: &str) -> Result<DeadLetter, BusError> {
        let key = dead_key(subscriber, id);
        let not_found = || BusError::NotFound { subscriber: subscriber.into(), id: id.into() };
        let value = self.dead.get(&key)?.ok_or_else(not_found)?;
        Ok(letter(&key, QueuedEvent::decode(&value)?, None))
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
        let Some(value) = self.dead.get(&dead)? else {
            return Err(BusError::NotFound { subscriber: subscriber.into(), id: id.into() });
        };
        self.dead.remove(&dead)?;
        self.backlog.removed(&value);
        Ok(())
    }
}
