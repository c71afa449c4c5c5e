//! The end of a successful invocation: everything it wrote to its keyspace,
//! every event it published, and (for an event handler) the mark that it
//! handled its event, applied as one atomic batch to the component's own
//! keyspace: a transactional outbox.
//!
//! Published events go to the keyspace's outbox, under a reserved key prefix
//! no guest key can have (keys are UTF-8, which never holds the byte 0xFF).
//! The dispatcher then relays them to the subscribers' queues. One keyspace, one
//! batch: no transaction across keyspaces is needed, and a failed invocation, which
//! never gets here, leaves no trace. Commits to one keyspace are serialised
//! by its lock, so a compare-and-swap's expectation is checked and its write
//! applied with no other commit in between.

use crate::capabilities::bus::Outgoing;
use crate::capabilities::keyvalue::{Held, PendingWrite, Writes, entry_size, parse_counter};
use crate::events::EventQueue;
use crate::events::queue::{QueuedEvent, now_ms};
use crate::metrics::Metrics;
use crate::resilience::memory::Charge;
use crate::runtime::idempotency::KeptAnswer;
use crate::runtime::registry::Deployment;
use crate::storage::reserved::{handled_key, outbox_key};
use crate::storage::{Batch, Keyspace, StorageError};

/// What one invocation asks to commit.
#[derive(Default)]
pub struct Effects {
    /// Its keyvalue writes.
    pub writes: Writes,
    /// The events it published.
    pub events: Vec<Outgoing>,
    /// The queue key of the event it handled, marked handled by this commit.
    pub handled: Option<Vec<u8>>,
    /// Its answer, kept for retries of a request sent with an
    /// `Idempotency-Key`.
    pub answer: Option<KeptAnswer>,
    /// What the writes and events hold (host memory, counter locks), let go
    /// once the commit is done with them.
    pub held: Option<(Held, Charge)>,
}

impl Effects {
    fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.events.is_empty()
            && self.handled.is_none()
            && self.answer.is_none()
    }
}

/// Why a commit did not happen. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A value a compare-and-swap relied on changed before the commit.
    #[error("a concurrent request changed key {0:?} first; nothing was saved, retry")]
    Conflict(String),
    /// The handled event was already handled (a replay raced a delivery).
    #[error("the event was already handled")]
    AlreadyHandled,
    /// Writers committing at once would take the keyspace over its quota;
    /// run again, the invocation's own writes see the quota is spent.
    #[error("a concurrent request filled the keyspace first: {0}; nothing was saved, retry")]
    QuotaExceeded(String),
    /// A counter cannot take what was added to it.
    #[error("counter {0:?} would overflow or does not hold an integer")]
    Counter(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Commit `effects` of an invocation of `deployment`, its events into
/// `bus`'s outbox and counted in `metrics`; returns whether anything was
/// written (and so must be flushed before answering).
pub fn commit(
    bus: &dyn EventQueue,
    metrics: &Metrics,
    deployment: &Deployment,
    effects: Effects,
) -> Result<bool, CommitError> {
    if effects.is_empty() {
        return Ok(false);
    }
    let keyspace = &*deployment.keyspace;
    // Sequence numbers first: they are unique whether or not this commits.
    let mut outbox = Vec::with_capacity(effects.events.len());
    let published_at = now_ms();
    for event in &effects.events {
        let seq = bus.next_seq()?;
        let queued = QueuedEvent {
            id: format!("evt_{seq:016x}"),
            topic: event.topic.clone(),
            source: deployment.name.to_string(),
            payload: event.payload.clone(),
            published_at,
            attempts: 0,
            not_before: published_at + event.delay.as_millis() as u64,
            last_error: None,
            traceparent: Some(event.trace.header()),
        };
        outbox.push((outbox_key(seq), queued.encode()));
    }

    let _commit = deployment.usage.commit_lock();
    // Built from the keyspace as it is now; on a keyspace shared with other
    // hosts, built again if one of them committed first (`transact`).
    let mut refused = None;
    let mut sizes = (0, 0);
    // The publisher's queued and dead-lettered events count against its
    // quota too, and so do the events this commit publishes.
    let backlog = bus.backlog(&deployment.name)
        + effects.events.iter().map(|e| (e.topic.len() + e.payload.len()) as u64).sum::<u64>();
    let mut prepare = || match batch(keyspace, deployment, &effects, &outbox, backlog) {
        Ok((batch, old_bytes, new_bytes)) => {
            sizes = (old_bytes, new_bytes);
            Some(batch)
        }
        Err(error) => {
            refused = Some(error);
            None
        }
    };
    if !keyspace.transact(&mut prepare)? {
        return Err(refused.unwrap_or(CommitError::Storage(StorageError::Busy)));
    }
    let (old_bytes, new_bytes) = sizes;
    deployment.usage.record(old_bytes, new_bytes);
    for event in &effects.events {
        metrics.published(&deployment.name, &event.topic);
    }
    if !outbox.is_empty() {
        bus.note_outbox(&deployment.name, &deployment.keyspace);
    }
    Ok(true)
}

/// The batch committing `effects` (with the events numbered in `outbox`) to
/// `keyspace` as it is now, and the bytes the written keys held and will
/// hold; or why it cannot commit.
fn batch(
    keyspace: &dyn Keyspace,
    deployment: &Deployment,
    effects: &Effects,
    outbox: &[(Vec<u8>, Vec<u8>)],
    backlog: u64,
) -> Result<(Batch, u64, u64), CommitError> {
    if let Some(queue_key) = &effects.handled
        && keyspace.contains(&handled_key(queue_key))?
    {
        return Err(CommitError::AlreadyHandled);
    }
    for (key, expected) in &effects.writes.expectations {
        if keyspace.get(key.as_bytes())?.as_deref() != expected.as_deref() {
            return Err(CommitError::Conflict(key.clone()));
        }
    }
    let mut batch = Batch::default();
    let (mut old_bytes, mut new_bytes) = (0, 0);
    for (key, write) in &effects.writes.pending {
        let old = keyspace.get(key.as_bytes())?;
        old_bytes += entry_size(key.as_bytes(), old.as_deref());
        let new = match write {
            PendingWrite::Put(value) => Some(value.clone()),
            PendingWrite::Delete => None,
            PendingWrite::Add(delta) => {
                let base = match old.as_deref() {
                    Some(bytes) => parse_counter(bytes).ok(),
                    None => Some(0),
                };
                let next = base
                    .and_then(|b| b.checked_add(*delta))
                    .ok_or_else(|| CommitError::Counter(key.clone()))?;
                Some(next.to_string().into_bytes())
            }
        };
        new_bytes += entry_size(key.as_bytes(), new.as_deref());
        match new {
            Some(value) => batch.insert(key.as_bytes(), value),
            None => batch.remove(key.as_bytes()),
        }
    }
    for (key, value) in outbox {
        batch.insert(key.clone(), value.clone());
    }
    if let Some(queue_key) = &effects.handled {
        // When: a cluster sweeps marks older than a while (`events::cluster`).
        batch.insert(handled_key(queue_key), now_ms().to_be_bytes());
    }
    if let Some(why) = deployment.usage.refuse(keyspace, old_bytes, new_bytes) {
        return Err(CommitError::QuotaExceeded(why));
    }
    // Events only ever add to the backlog: a commit publishing none is
    // never refused for it, so a full backlog can still be cleaned up.
    if !outbox.is_empty()
        && let Some(why) = deployment.usage.refuse_backlog(keyspace, old_bytes, new_bytes, backlog)
    {
        return Err(CommitError::QuotaExceeded(why));
    }
    if let Some(answer) = &effects.answer {
        // The lease ends after the deadline, so it is ours unless the
        // record was swept or overwritten by hand: then keep nothing.
        if keyspace.get(&answer.key)?.as_deref() != Some(&answer.lease[..]) {
            return Err(CommitError::Conflict("the request's Idempotency-Key lease".into()));
        }
        // Counted in the keyspace's bytes, but never the reason a commit
        // is refused: the guest could not have known, and would only run
        // again until its deadline.
        old_bytes += entry_size(&answer.key, Some(&answer.lease));
        new_bytes += entry_size(&answer.key, Some(&answer.value));
        batch.insert(answer.key.clone(), answer.value.clone());
    }
    Ok((batch, old_bytes, new_bytes))
}
