//! The durable event queue: outbox and queue keys, lanes, retries and dead
//! letters ([`Bus`]).
//!
//! The [`crate::dispatch`] loop relays outbox entries (written by
//! [`crate::commit`]) to one queue entry per subscribing component, then
//! delivers each; the handler's commit marks the entry handled in the
//! subscriber's keyspace, in the batch with the handler's own writes, so an
//! entry found handled after a crash is dropped instead of redelivered.
//!
//! Queue keys are `subscriber \0 topic \0 seq`, so each (subscriber, topic)
//! pair is a *lane* read in commit order: delivery is in order per topic per
//! subscriber, while lanes proceed independently of each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sled::Tree;

use pitstop_gateway::TraceContext;

use crate::bus::Topics;

/// Retry and dead-letter rules.
#[derive(Debug, Clone, Copy)]
pub struct BusOptions {
    /// Deliveries of one event to one subscriber before it is dead-lettered.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles with each further one.
    pub backoff_base: Duration,
    /// The longest wait between two attempts.
    pub backoff_max: Duration,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            max_attempts: 5,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl BusOptions {
    /// How long to wait after `attempts` failed deliveries.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(20);
        self.backoff_base.saturating_mul(factor).min(self.backoff_max)
    }
}

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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Where a keyspace keeps events published but not yet relayed. Guest keys
/// are UTF-8 and so never start with 0xFF: no guest can read or forge these.
const OUTBOX_PREFIX: &[u8] = b"\xffoutbox\0";
/// Where a subscriber's keyspace marks the queue entries it has handled.
const HANDLED_PREFIX: &[u8] = b"\xffhandled\0";

/// The outbox key of event number `seq`.
pub(crate) fn outbox_key(seq: u64) -> Vec<u8> {
    let mut key = OUTBOX_PREFIX.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The mark, in the subscriber's keyspace, that the entry at `queue_key` was handled.
pub(crate) fn handled_key(queue_key: &[u8]) -> Vec<u8> {
    let mut key = HANDLED_PREFIX.to_vec();
    key.extend_from_slice(queue_key);
    key
}

/// Whether `key` is one of the platform's own keys in a keyspace.
pub fn is_reserved_key(key: &[u8]) -> bool {
    key.first() == Some(&0xff)
}

/// The durable queue and dead-letter store.
pub struct Bus {
    db: sled::Db,
    queue: Tree,
    dead: Tree,
    options: BusOptions,
    // Keyspaces that may hold outbox entries, by component name.
    outboxes: Mutex<HashMap<String, Tree>>,
    // Every relayed event, when the test harness asked for a record.
    tap: Mutex<Option<Vec<QueuedEvent>>>,
    // Set by the test harness to hold deliveries back.
    paused: std::sync::atomic::AtomicBool,
    // Whether the dispatcher task is alive, for readiness.
    dispatching: std::sync::atomic::AtomicBool,
    pub(crate) wake: tokio::sync::Notify,
}

/// Clears the dispatcher's running flag when dropped.
pub(crate) struct DispatchingGuard<'a>(&'a Bus);

impl Drop for DispatchingGuard<'_> {
    fn drop(&mut self) {
        self.0.dispatching.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The lane part of a queue key: `subscriber \0 topic \0`.
pub fn lane(subscriber: &str, topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(subscriber.len() + topic.len() + 10);
    key.extend_from_slice(subscriber.as_bytes());
    key.push(0);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key
}

/// The queue key of sequence number `seq` in a lane.
pub fn queue_key(subscriber: &str, topic: &str, seq: u64) -> Vec<u8> {
    let mut key = lane(subscriber, topic);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The lane a queue key belongs to.
pub(crate) fn lane_of(key: &[u8]) -> &[u8] {
    &key[..key.len().saturating_sub(8)]
}

/// The subscriber a queue key or lane belongs to.
pub(crate) fn subscriber_of(key: &[u8]) -> &str {
    let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
    std::str::from_utf8(&key[..end]).unwrap_or_default()
}

fn dead_key(subscriber: &str, id: &str) -> Vec<u8> {
    let mut key = subscriber.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No such dead letter.
    #[error("no dead letter {id:?} for subscriber {subscriber:?}")]
    NotFound {
        /// The subscriber asked for.
        subscriber: String,
        /// The event id asked for.
        id: String,
    },
    /// The store failed.
    #[error("storage failed: {0}")]
    Storage(#[from] sled::Error),
    /// A stored event could not be read back.
    #[error("corrupt queue entry: {0}")]
    Corrupt(#[from] postcard::Error),
}

impl Bus {
    /// The bus stored in `db`.
    pub fn open(db: &sled::Db, options: BusOptions) -> sled::Result<Self> {
        Ok(Bus {
            db: db.clone(),
            queue: db.open_tree("pitstop/bus/queue")?,
            dead: db.open_tree("pitstop/bus/dead")?,
            options,
            outboxes: Mutex::default(),
            tap: Mutex::default(),
            paused: Default::default(),
            dispatching: Default::default(),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Find the keyspaces whose outbox still holds events from before a restart.
    pub fn restore_outboxes(&self, keyspace_prefix: &str) -> sled::Result<()> {
        for name in self.db.tree_names() {
            let Some(component) = std::str::from_utf8(&name)
                .ok()
                .and_then(|n| n.strip_prefix(keyspace_prefix))
                .map(str::to_string)
            else {
                continue;
            };
            let tree = self.db.open_tree(&name)?;
            if tree.scan_prefix(OUTBOX_PREFIX).next().is_some() {
                self.note_outbox(&component, &tree);
            }
        }
        Ok(())
    }

    /// `component`'s keyspace has outbox entries to relay.
    pub(crate) fn note_outbox(&self, component: &str, keyspace: &Tree) {
        let mut outboxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
        if !outboxes.contains_key(component) {
            outboxes.insert(component.to_string(), keyspace.clone());
        }
        drop(outboxes);
        self.wake();
    }

    /// Move every outbox entry to one queue entry per component subscribed
    /// to its topic now: `subscribers` are the active components' names and
    /// declared topics. The queue key carries the event's sequence number,
    /// so relaying an entry twice (a crash between the two steps) writes the
    /// same queue entry twice, not two entries.
    pub(crate) fn relay(&self, subscribers: &[(Arc<str>, Arc<Topics>)]) -> Result<(), BusError> {
        let outboxes: Vec<Tree> = {
            let outboxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
            outboxes.values().cloned().collect()
        };
        for tree in outboxes {
            for entry in tree.scan_prefix(OUTBOX_PREFIX) {
                let (key, value) = entry?;
                let seq_bytes: [u8; 8] = key[OUTBOX_PREFIX.len()..].try_into().unwrap_or_default();
                let seq = u64::from_be_bytes(seq_bytes);
                let event = QueuedEvent::decode(&value)?;
                let topic = event.topic.clone();
                if let Some(tap) = self.tap.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                    tap.push(event);
                }
                let mut batch = sled::Batch::default();
                for (name, _) in subscribers.iter().filter(|(_, t)| t.subscribes.contains(&topic)) {
                    batch.insert(queue_key(name, &topic, seq), value.clone());
                }
                self.queue.apply_batch(batch)?;
                tree.remove(key)?;
            }
        }
        Ok(())
    }

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

    /// Whether deliveries are held back.
    /// Whether the dispatcher is running (see [`Bus::dispatching_guard`]).
    pub fn is_dispatching(&self) -> bool {
        self.dispatching.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the dispatcher running until the guard is dropped (the task
    /// ends, is aborted, or panics).
    pub(crate) fn dispatching_guard(&self) -> DispatchingGuard<'_> {
        self.dispatching.store(true, std::sync::atomic::Ordering::Relaxed);
        DispatchingGuard(self)
    }

    /// Events queued and not yet handled, per subscriber (including those
    /// waiting for a retry); subscribers with none are left out.
    pub fn lag(&self) -> Vec<(String, u64)> {
        let mut lags: Vec<(String, u64)> = Vec::new();
        for key in self.queue.iter().keys().flatten() {
            let subscriber = subscriber_of(&key);
            match lags.last_mut() {
                // Keys sort by subscriber first, so each one's entries are together.
                Some((last, count)) if last == subscriber => *count += 1,
                _ => lags.push((subscriber.to_string(), 1)),
            }
        }
        lags
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Queue entries of the event `id`, with their keys.
    fn entries_of(&self, id: &str) -> Result<Vec<(sled::IVec, QueuedEvent)>, BusError> {
        let mut found = Vec::new();
        for entry in self.queue.iter() {
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
        self.queue.insert(key, again.encode())?;
        self.wake();
        Ok(())
    }

    /// Whether every keyspace's outbox is empty.
    pub fn outboxes_empty(&self) -> bool {
        let outboxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
        outboxes.values().all(|tree| tree.scan_prefix(OUTBOX_PREFIX).next().is_none())
    }

    /// Whether `subscriber` already handled the entry at `queue_key` (its
    /// commit landed, a crash came before the entry was removed).
    pub(crate) fn was_handled(&self, subscriber: &Tree, queue_key: &[u8]) -> bool {
        subscriber.contains_key(handled_key(queue_key)).unwrap_or(false)
    }

    /// Drop the handled entry at `queue_key`, then its mark.
    pub(crate) fn finish(&self, subscriber: &Tree, queue_key: &[u8]) -> Result<(), BusError> {
        self.queue.remove(queue_key)?;
        subscriber.remove(handled_key(queue_key))?;
        Ok(())
    }

    /// The queue tree.
    pub(crate) fn queue(&self) -> &Tree {
        &self.queue
    }

    /// A new sequence number, unique and increasing across restarts.
    pub(crate) fn next_seq(&self) -> sled::Result<u64> {
        self.db.generate_id()
    }

    /// Tell the dispatcher there may be work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The first entry of each lane, in key order.
    pub(crate) fn lane_heads(&self) -> impl Iterator<Item = (Vec<u8>, sled::IVec)> + '_ {
        let mut from: Option<Vec<u8>> = Some(Vec::new());
        std::iter::from_fn(move || {
            let start = from.take()?;
            let (key, value) = self.queue.range(start..).next()?.ok()?;
            // The next lane starts after every key of this one: bump the
            // lane's trailing \0 to \x01 (names and topics never hold either).
            let mut next = lane_of(&key).to_vec();
            *next.last_mut()? = 1;
            from = Some(next);
            Some((key.to_vec(), value))
        })
    }

    /// Schedule another attempt of the entry at `key`, or move it to the
    /// dead letters if it has had all its attempts. Returns whether it died.
    pub(crate) fn retry_or_bury(
        &self,
        key: &[u8],
        mut event: QueuedEvent,
        error: String,
    ) -> Result<bool, BusError> {
        event.last_error = Some(error);
        if event.attempts < self.options.max_attempts {
            event.not_before = now_ms() + self.options.backoff(event.attempts).as_millis() as u64;
            self.queue.insert(key, event.encode())?;
            return Ok(false);
        }
        let subscriber = subscriber_of(key).to_string();
        // Dead letter first, then out of the queue: a crash in between
        // leaves it in both, never in neither.
        self.dead.insert(dead_key(&subscriber, &event.id), event.encode())?;
        self.queue.remove(key)?;
        tracing::warn!(
            subscriber,
            event = event.id,
            topic = event.topic,
            attempts = event.attempts,
            error = event.last_error.as_deref().unwrap_or_default(),
            "event dead-lettered"
        );
        Ok(true)
    }

    /// Put the entry at `key` back untouched (not counted as an attempt),
    /// deliverable again after `wait`.
    pub(crate) fn postpone(
        &self,
        key: &[u8],
        mut event: QueuedEvent,
        wait: Duration,
    ) -> Result<(), BusError> {
        event.not_before = now_ms() + wait.as_millis() as u64;
        self.queue.insert(key, event.encode())?;
        Ok(())
    }

    /// Move the entry at `key` to the dead letters at once, for a reason
    /// retrying cannot fix.
    pub(crate) fn bury(&self, key: &[u8], mut event: QueuedEvent, reason: String) {
        event.attempts = event.attempts.max(self.options.max_attempts);
        if let Err(error) = self.retry_or_bury(key, event, reason) {
            tracing::error!(%error, "could not dead-letter an event");
        }
    }

    /// Every dead letter, for `subscriber` only when given.
    pub fn dead_letters(&self, subscriber: Option<&str>) -> Result<Vec<DeadLetter>, BusError> {
        let prefix = subscriber.map(|s| dead_key(s, "")).unwrap_or_default();
        let mut letters = Vec::new();
        for entry in self.dead.scan_prefix(prefix) {
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
        self.queue.insert(key, event.encode())?;
        self.dead.remove(&dead)?;
        self.wake();
        Ok(())
    }

    /// Drop a dead letter for good.
    pub fn discard(&self, subscriber: &str, id: &str) -> Result<(), BusError> {
        match self.dead.remove(dead_key(subscriber, id))? {
            Some(_) => Ok(()),
            None => Err(BusError::NotFound { subscriber: subscriber.into(), id: id.into() }),
        }
    }

    /// Forget everything queued for or dead-lettered at `subscriber`, and its
    /// outbox (a purge; its keyspace is dropped).
    pub fn forget_subscriber(&self, subscriber: &str) -> Result<(), BusError> {
        self.outboxes.lock().unwrap_or_else(|p| p.into_inner()).remove(subscriber);
        let prefix = dead_key(subscriber, "");
        for tree in [&self.queue, &self.dead] {
            for key in tree.scan_prefix(&prefix).keys() {
                tree.remove(key?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = BusOptions {
            max_attempts: 10,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
        };
        let waits: Vec<u64> = (1..=6).map(|n| options.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn lanes_are_read_head_first_and_in_order() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let bus = Bus::open(&db, BusOptions::default()).unwrap();
        let event = |n: u64| QueuedEvent {
            id: format!("evt_{n}"),
            topic: String::new(),
            source: "t".into(),
            payload: vec![],
            published_at: 0,
            attempts: 0,
            not_before: 0,
            last_error: None,
            traceparent: None,
        };
        for (sub, topic, seq) in [("b", "x", 7), ("a", "y", 3), ("a", "x", 9), ("a", "x", 2)] {
            bus.queue.insert(queue_key(sub, topic, seq), event(seq).encode()).unwrap();
        }
        let heads: Vec<(String, u64)> = bus
            .lane_heads()
            .map(|(key, value)| {
                (
                    String::from_utf8_lossy(lane_of(&key)).into_owned(),
                    QueuedEvent::decode(&value).unwrap().id[4..].parse().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            heads,
            [("a\0x\0".to_string(), 2), ("a\0y\0".to_string(), 3), ("b\0x\0".to_string(), 7)]
        );
    }
}
