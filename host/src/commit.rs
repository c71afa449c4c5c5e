//! The end of a successful invocation: everything it wrote to its keyspace,
//! every event it published, and (for an event handler) the acknowledgement
//! of the event it handled, committed in one sled transaction.
//!
//! A failed invocation never gets here, so it leaves no trace. Other
//! invocations see all of a commit or none of it.

use std::ops::Deref;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::bus::{Outgoing, QueuedEvent, now_ms, queue_key};
use crate::kv::{PendingWrite, Writes, entry_size, parse_counter};
use crate::registry::{Deployment, Registry};
use crate::runtime::Runtime;

/// What one invocation asks to commit.
#[derive(Default)]
pub struct Effects {
    /// Its keyvalue writes.
    pub writes: Writes,
    /// The events it published.
    pub events: Vec<Outgoing>,
    /// The queue entry of the event it handled, acknowledged by this commit.
    pub ack: Option<Vec<u8>>,
}

impl Effects {
    fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.events.is_empty() && self.ack.is_none()
    }
}

/// Why a commit did not happen. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A value a compare-and-swap relied on changed before the commit.
    #[error("a concurrent request changed key {0:?} first; nothing was saved, retry")]
    Conflict(String),
    /// The handled event was acknowledged (or replayed) by someone else.
    #[error("the event was already acknowledged")]
    AlreadyAcknowledged,
    /// A counter cannot take what was added to it.
    #[error("counter {0:?} would overflow or does not hold an integer")]
    Counter(String),
    /// Storage failed.
    #[error("storage failed: {0}")]
    Storage(String),
}

/// Commit `effects` of an invocation of `deployment`; returns whether
/// anything was written (and so must be flushed before answering).
pub fn commit(
    runtime: &Runtime,
    deployment: &Deployment,
    effects: Effects,
) -> Result<bool, CommitError> {
    if effects.is_empty() {
        return Ok(false);
    }
    let bus = runtime.bus();
    let deliveries = fan_out(runtime.registry(), bus, &deployment.name, &effects.events)?;
    let Effects { writes, ack, .. } = effects;

    let result = (&deployment.keyspace, bus.queue()).transaction(|(keyspace, queue)| {
        if let Some(ack) = &ack
            && queue.remove(ack.as_slice())?.is_none()
        {
            return abort(CommitError::AlreadyAcknowledged);
        }
        for (key, expected) in &writes.expectations {
            if keyspace.get(key)?.as_deref() != expected.as_deref() {
                return abort(CommitError::Conflict(key.clone()));
            }
        }
        let (old_bytes, new_bytes) = apply(keyspace, &writes)?;
        for (key, value) in &deliveries {
            queue.insert(key.as_slice(), value.as_slice())?;
        }
        Ok((old_bytes, new_bytes))
    });
    match result {
        Ok((old_bytes, new_bytes)) => {
            deployment.usage.record(old_bytes, new_bytes);
            if !deliveries.is_empty() {
                bus.wake();
            }
            Ok(true)
        }
        Err(TransactionError::Abort(error)) => Err(error),
        Err(TransactionError::Storage(error)) => Err(CommitError::Storage(error.to_string())),
    }
}

fn abort<T>(error: CommitError) -> Result<T, ConflictableTransactionError<CommitError>> {
    Err(ConflictableTransactionError::Abort(error))
}

/// Write every pending write; returns the bytes the touched keys held
/// before and hold after, for the quota.
fn apply(
    keyspace: &TransactionalTree,
    writes: &Writes,
) -> Result<(u64, u64), ConflictableTransactionError<CommitError>> {
    let (mut old_bytes, mut new_bytes) = (0, 0);
    for (key, write) in &writes.pending {
        let old = keyspace.get(key)?;
        old_bytes += entry_size(key.as_bytes(), old.as_deref());
        let new = match write {
            PendingWrite::Put(value) => Some(value.clone()),
            PendingWrite::Delete => None,
            PendingWrite::Add(delta) => {
                let base = match old.as_deref() {
                    Some(bytes) => parse_counter(bytes).ok(),
                    None => Some(0),
                };
                let Some(next) = base.and_then(|b| b.checked_add(*delta)) else {
                    return abort(CommitError::Counter(key.clone()));
                };
                Some(next.to_string().into_bytes())
            }
        };
        new_bytes += entry_size(key.as_bytes(), new.as_deref());
        match new {
            Some(value) => keyspace.insert(key.as_bytes(), value)?,
            None => keyspace.remove(key.as_bytes())?,
        };
    }
    Ok((old_bytes, new_bytes))
}

/// A queue key and its encoded [`QueuedEvent`].
type QueueEntry = (Vec<u8>, Vec<u8>);

/// One queue entry per event and subscribing component, keyed so each
/// subscriber's lane for the topic reads in commit order.
fn fan_out(
    registry: &Registry,
    bus: &crate::bus::Bus,
    source: &str,
    events: &[Outgoing],
) -> Result<Vec<QueueEntry>, CommitError> {
    let mut deliveries = Vec::new();
    if events.is_empty() {
        return Ok(deliveries);
    }
    let active = registry.active();
    let published_at = now_ms();
    for event in events {
        let seq = bus.next_seq().map_err(|e| CommitError::Storage(e.to_string()))?;
        let queued = QueuedEvent {
            id: format!("evt_{seq:016x}"),
            topic: event.topic.clone(),
            source: source.to_string(),
            payload: event.payload.clone(),
            published_at,
            attempts: 0,
            not_before: published_at + event.delay.as_millis() as u64,
            last_error: None,
        };
        let encoded = queued.encode();
        for subscriber in active.values().filter(|d| d.topics.subscribes.contains(&event.topic)) {
            deliveries
                .push((queue_key(subscriber.name.deref(), &event.topic, seq), encoded.clone()));
        }
    }
    Ok(deliveries)
}
