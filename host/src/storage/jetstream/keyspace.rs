//! A keyspace on JetStream: reads from this host's [`View`], writes as
//! commit records appended to the keyspace's stream.
//!
//! **Atomic commits.** A batch is one message, so it is in the log whole or
//! not at all. **Read-your-writes across hosts.** [`Keyspace::sync`] asks
//! the server for the stream's last sequence and waits until this host's
//! view has applied it: everything acknowledged to anyone before the call is
//! then visible here. **Compare-and-swap and counters.** A transaction
//! reads this host's view at sequence `n` and appends its record with
//! `Nats-Expected-Last-Sequence: n`: the server refuses it if any other
//! commit came after `n`, and the transaction runs again on the newer state.
//! That serialises a keyspace's commits across the cluster, as the commit
//! lock does within one host.

use std::ops::Bound;
use std::sync::Arc;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use tokio::task::JoinHandle;

use super::barrier::Barrier;
use super::view::View;
use super::{Link, record};
use crate::storage::{Batch, Entries, Keyspace, StorageError};

/// How many times a transaction runs again after other hosts' commits came
/// first, before it gives up.
const MAX_ROUNDS: usize = 64;

/// Entries a range read copies out of the view at a time.
const RANGE_CHUNK: usize = 128;

/// One component's keyspace, on a stream of its own.
pub struct JetStreamKeyspace {
    link: Arc<Link>,
    stream: Stream,
    subject: String,
    view: Arc<View>,
    follower: JoinHandle<()>,
    barrier: Arc<Barrier>,
}

impl JetStreamKeyspace {
    /// The keyspace kept in `stream` (whose one subject is `subject`), its
    /// view filled by `follower`.
    pub(super) fn new(
        link: Arc<Link>,
        stream: Stream,
        subject: String,
        view: Arc<View>,
        follower: JoinHandle<()>,
    ) -> Self {
        JetStreamKeyspace { link, stream, subject, view, follower, barrier: Arc::default() }
    }

    /// Wait, at most `timeout`, until the view has applied every commit the
    /// stream holds now.
    pub(super) fn catch_up(&self, timeout: std::time::Duration) -> Result<(), StorageError> {
        let (stream, view, barrier) =
            (self.stream.clone(), self.view.clone(), self.barrier.clone());
        self.link.block_within(timeout, "reading the keyspace's last commit", async move {
            let end = barrier.log_end(&stream).await?;
            view.check_incarnation(end.created);
            view.applied_up_to(end.last).await;
            Ok(())
        })
    }

    /// Append `batch`, expecting the stream's last sequence to be
    /// `expected` when given; `Ok(None)` when it was not.
    fn append(&self, batch: &Batch, expected: Option<u64>) -> Result<Option<u64>, StorageError> {
        let bytes = record::encode(batch).map_err(|e| StorageError::Backend(Box::new(e)))?;
        let max = self.link.max_payload();
        if bytes.len() > max {
            return Err(StorageError::Backend(
                format!(
                    "a commit of {} bytes is larger than the cluster's max_payload ({max} bytes)",
                    bytes.len()
                )
                .into(),
            ));
        }
        let mut message = PublishMessage::build().payload(Bytes::from(bytes));
        if let Some(expected) = expected {
            message = message.expected_last_sequence(expected);
        }
        let subject = self.subject.clone();
        let context = self.link.context.clone();
        let timeout = self.link.timeout;
        // The outer bound a little later than the acknowledgement's own, so
        // a publish that was sent ends as "may have been stored".
        let bound = timeout + std::time::Duration::from_millis(500);
        self.link.block_within(bound, "committing", async move {
            // Anything but a refused expectation is NATS not storing the
            // commit now (down, reconnecting, no stream leader): unavailable.
            let unavailable = |e: async_nats::jetstream::context::PublishError| {
                StorageError::Unavailable(format!("committing: {e}"))
            };
            let ack = context.send_publish(subject, message).await.map_err(unavailable)?;
            // Sent, and no answer (NATS went away, or is too slow): it may
            // have been stored. Unavailable all the same (503: the request
            // could not be served now), with the doubt in the message.
            let in_doubt = |why: String| {
                StorageError::Unavailable(format!(
                    "committing: {why}; the commit may have been stored"
                ))
            };
            let Ok(ack) = tokio::time::timeout(timeout, ack).await else {
                return Err(in_doubt(format!("no answer within {timeout:?}")));
            };
            match ack {
                Ok(ack) => Ok(Some(ack.sequence)),
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
                Err(error) => Err(in_doubt(error.to_string())),
            }
        })
    }

    /// Make the commit at `seq` (holding `batch`) visible here before
    /// returning: applied at once when it is the next one, else once the
    /// follower has caught up to it.
    fn settle(&self, seq: u64, batch: Batch) -> Result<(), StorageError> {
        if self.view.apply_next(seq, batch.writes) {
            return Ok(());
        }
        let view = self.view.clone();
        self.link.block("reading the commit back", async move {
            view.applied_up_to(seq).await;
            Ok(())
        })
    }
}

impl Drop for JetStreamKeyspace {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl Keyspace for JetStreamKeyspace {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.view.read().entries.get(key).cloned())
    }

    fn range_from(&self, start: Bound<&[u8]>) -> Entries<'_> {
        // Chunks, each under a short read lock, so a long scan never holds
        // the follower back.
        let mut from = start.map(<[u8]>::to_vec);
        let mut chunk = std::collections::VecDeque::new();
        Box::new(std::iter::from_fn(move || {
            if chunk.is_empty() {
                let state = self.view.read();
                chunk.extend(
                    state
                        .entries
                        .range::<Vec<u8>, _>((from.clone(), Bound::Unbounded))
                        .take(RANGE_CHUNK)
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                if let Some((last, _)) = chunk.back() {
                    from = Bound::Excluded(last.clone());
                }
            }
            chunk.pop_front().map(Ok)
        }))
    }

    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        if batch.writes.is_empty() {
            return Ok(());
        }
        // Without an expectation the server has nothing to refuse.
        let Some(seq) = self.append(&batch, None)? else { return Err(StorageError::Busy) };
        self.settle(seq, batch)
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.view.changes())
    }

    fn guest_bytes(&self) -> Option<u64> {
        Some(self.view.read().guest_bytes)
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.catch_up(self.link.timeout)
    }

    fn transact(&self, prepare: &mut dyn FnMut() -> Option<Batch>) -> Result<bool, StorageError> {
        for round in 0..MAX_ROUNDS {
            // The first round trusts the view (the invocation synced when
            // it started reading); a refused append means another host
            // committed since, so later rounds catch up first.
            if round > 0 {
                self.sync()?;
            }
            let head = self.view.applied();
            let Some(batch) = prepare() else { return Ok(false) };
            if batch.writes.is_empty() {
                return Ok(true);
            }
            if let Some(seq) = self.append(&batch, Some(head))? {
                self.settle(seq, batch)?;
                return Ok(true);
            }
        }
        Err(StorageError::Busy)
    }
}
