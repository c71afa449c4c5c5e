//! The durable event queue: outbox and queue keys, lanes, retries and dead
//! letters ([`Bus`]).
//!
//! The [`crate::events::dispatch`] loop relays outbox entries (written by
//! [`crate::runtime::commit`]) to one queue entry per subscribing component, then
//! delivers each; the handler's commit marks the entry handled in the
//! subscriber's keyspace, in the batch with the handler's own writes, so an
//! entry found handled after a crash is dropped instead of redelivered.
//!
//! Queue keys are `subscriber \0 topic \0 seq`, so each (subscriber, topic)
//! pair is a *lane* read in commit order: delivery is in order per topic per
//! subscriber, while lanes proceed independently of each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod backlog;
mod dead_letters;
mod event;
mod relay;
mod test_hooks;

use dead_letters::dead_key;
pub use dead_letters::{DeadLetter, DeadLetterPage, MAX_PAGE, PREVIEW_BYTES};
pub use event::{QueuedEvent, now_ms};
pub use relay::RELAY_SHARE;

use backlog::Backlog;

use crate::storage::embedded::SledKeyspace;
use crate::storage::reserved::{OUTBOX_PREFIX, handled_key};
use crate::storage::{Batch, Keyspace, KeyspaceStore, StorageError};

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

/// Where event numbers come from: unique, and increasing across restarts.
pub trait Sequencer: Send + Sync + 'static {
    /// The next number.
    fn next(&self) -> Result<u64, StorageError>;
}

/// The embedded database numbers events (sled's monotonic ids).
impl Sequencer for sled::Db {
    fn next(&self) -> Result<u64, StorageError> {
        Ok(self.generate_id()?)
    }
}

/// The durable queue and dead-letter store.
///
/// Both are keyspaces: trees of the embedded database, or on a cluster the
/// platform keyspaces every host shares.
pub struct Bus {
    sequencer: Arc<dyn Sequencer>,
    queue: Arc<dyn Keyspace>,
    dead: Arc<dyn Keyspace>,
    options: BusOptions,
    // Whether `finish` leaves handled marks (see `keeping_marks`).
    keep_marks: bool,
    // What each publisher's events hold in the queue and the dead letters.
    backlog: Backlog,
    // Keyspaces that may hold outbox entries, by component name.
    outboxes: Mutex<HashMap<String, Arc<dyn Keyspace>>>,
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
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored event could not be read back.
    #[error("corrupt queue entry: {0}")]
    Corrupt(#[from] postcard::Error),
}

impl From<sled::Error> for BusError {
    fn from(error: sled::Error) -> Self {
        BusError::Storage(error.into())
    }
}

impl Bus {
    /// The bus stored in `db`.
    pub fn open(db: &sled::Db, options: BusOptions) -> sled::Result<Self> {
        let queue = Arc::new(SledKeyspace::new(db.open_tree("pitstop/bus/queue")?));
        let dead = Arc::new(SledKeyspace::new(db.open_tree("pitstop/bus/dead")?));
        Ok(Bus::with_keyspaces(Arc::new(db.clone()), queue, dead, options))
    }

    /// The bus keeping its queue in `queue` and its dead letters in `dead`,
    /// numbering events with `sequencer`.
    pub fn with_keyspaces(
        sequencer: Arc<dyn Sequencer>,
        queue: Arc<dyn Keyspace>,
        dead: Arc<dyn Keyspace>,
        options: BusOptions,
    ) -> Self {
        Bus {
            backlog: Backlog::count(&*queue, &*dead),
            sequencer,
            queue,
            dead,
            options,
            keep_marks: false,
            outboxes: Mutex::default(),
            tap: Mutex::default(),
            paused: Default::default(),
            dispatching: Default::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Find the keyspaces whose outbox still holds events from before a restart.
    pub fn restore_outboxes(&self, keyspaces: &dyn KeyspaceStore) -> Result<(), StorageError> {
        for component in keyspaces.names()? {
            let keyspace = keyspaces.open(&component)?;
            if keyspace.scan_prefix(OUTBOX_PREFIX).next().is_some() {
                self.note_outbox(&component, &keyspace);
            }
        }
        Ok(())
    }

    /// `component`'s keyspace has outbox entries to relay.
    pub(crate) fn note_outbox(&self, component: &str, keyspace: &Arc<dyn Keyspace>) {
        let mut outboxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
        if !outboxes.contains_key(component) {
            outboxes.insert(component.to_string(), keyspace.clone());
        }
        drop(outboxes);
        self.wake();
    }

    /// Bytes of `publisher`'s events queued or dead-lettered now, which
    /// count against its keyspace quota (see [`backlog`]).
    pub fn backlog(&self, publisher: &str) -> u64 {
        self.backlog.of(publisher)
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
        for (key, _) in self.queue.range_from(std::ops::Bound::Unbounded).flatten() {
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

    /// Whether every keyspace's outbox is empty.
    pub fn outboxes_empty(&self) -> bool {
        let outboxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
        outboxes.values().all(|keyspace| keyspace.scan_prefix(OUTBOX_PREFIX).next().is_none())
    }

    /// Whether `subscriber` already handled the entry at `queue_key` (its
    /// commit landed, a crash came before the entry was removed).
    pub(crate) fn was_handled(&self, subscriber: &dyn Keyspace, queue_key: &[u8]) -> bool {
        subscriber.contains(&handled_key(queue_key)).unwrap_or(false)
    }

    /// Drop the handled entry at `queue_key`, then its mark (unless marks
    /// are kept, see [`Bus::keeping_marks`]).
    pub(crate) fn finish(
        &self,
        subscriber: &dyn Keyspace,
        queue_key: &[u8],
    ) -> Result<(), BusError> {
        let entry = self.queue.get(queue_key)?;
        self.queue.remove(queue_key)?;
        if let Some(value) = entry {
            self.backlog.removed(&value);
        }
        if !self.keep_marks {
            subscriber.remove(&handled_key(queue_key))?;
        }
        Ok(())
    }

    /// Leave handled marks in place when an entry is finished, for whoever
    /// sweeps them later: where a delivery may still run after another
    /// dispatcher took over (a cluster), its mark is what stops a second
    /// handling of the same entry.
    pub fn keeping_marks(mut self) -> Self {
        self.keep_marks = true;
        self
    }

    /// Bring the queue and the dead letters up to date with every write
    /// acknowledged before the call (shared with other hosts, they may lag).
    pub(crate) fn queue_synced(&self) -> Result<(), StorageError> {
        self.queue.sync()?;
        self.dead.sync()
    }

    /// The queue.
    pub(crate) fn queue(&self) -> &dyn Keyspace {
        &*self.queue
    }

    /// A new sequence number, unique and increasing across restarts.
    pub(crate) fn next_seq(&self) -> Result<u64, StorageError> {
        self.sequencer.next()
    }

    /// Tell the dispatcher there may be work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The first entry of each lane, in key order.
    pub(crate) fn lane_heads(&self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
        let mut from: Option<Vec<u8>> = Some(Vec::new());
        std::iter::from_fn(move || {
            let start = from.take()?;
            let (key, value) =
                self.queue.range_from(std::ops::Bound::Included(&start)).next()?.ok()?;
            // The next lane starts after every key of this one: bump the
            // lane's trailing \0 to \x01 (names and topics never hold either).
            let mut next = lane_of(&key).to_vec();
            *next.last_mut()? = 1;
            from = Some(next);
            Some((key, value))
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
            self.queue.insert(key, &event.encode())?;
            return Ok(false);
        }
        let subscriber = subscriber_of(key).to_string();
        // Dead letter first, then out of the queue: a crash in between
        // leaves it in both, never in neither.
        self.dead.insert(&dead_key(&subscriber, &event.id), &event.encode())?;
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
        self.queue.insert(key, &event.encode())?;
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

    /// Forget everything queued for or dead-lettered at `subscriber`, and its
    /// outbox (a purge; its keyspace is dropped).
    pub fn forget_subscriber(&self, subscriber: &str) -> Result<(), BusError> {
        self.outboxes.lock().unwrap_or_else(|p| p.into_inner()).remove(subscriber);
        let prefix = dead_key(subscriber, "");
        for keyspace in [&self.queue, &self.dead] {
            let mut batch = Batch::default();
            let mut gone = Vec::new();
            for entry in keyspace.scan_prefix(&prefix) {
                let (key, value) = entry?;
                batch.remove(key);
                gone.push(value);
            }
            keyspace.apply(batch)?;
            gone.iter().for_each(|value| self.backlog.removed(value));
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
            bus.queue.insert(&queue_key(sub, topic, seq), &event(seq).encode()).unwrap();
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
