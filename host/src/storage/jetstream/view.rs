//! One host's copy of a keyspace kept on JetStream: the state its commit
//! log adds up to, in memory, and the task that follows the log.
//!
//! The log is the keyspace's stream: one message per commit, each the
//! whole batch (see [`super::record`]). Every host that opened the keyspace
//! applies every message in stream order, so all copies pass through the
//! same states; a copy is as fresh as the last sequence it applied, and a
//! reader that must see every write acknowledged anywhere first waits for
//! the stream's last sequence (see [`super::keyspace`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};

use super::record;
use crate::storage::reserved::{OUTBOX_PREFIX, is_charged_key};

/// The state of a keyspace after the commit at `applied`.
#[derive(Debug, Default)]
pub struct State {
    /// The stream sequence of the last commit applied (0: none yet).
    pub applied: u64,
    /// Every entry, in key order.
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Bytes of the guest's keys and values in `entries` (reserved keys
    /// left out), against the keyspace's quota.
    pub guest_bytes: u64,
}

/// The keyspaces whose applied commits wrote outbox entries, so the event
/// queue relays events whichever host committed them.
#[derive(Default)]
pub struct OutboxSignal {
    written: Mutex<BTreeSet<String>>,
    notify: Notify,
}

impl OutboxSignal {
    fn outbox_written(&self, component: &str) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.insert(component.to_string()) {
            self.notify.notify_one();
        }
    }

    /// The keyspaces written to since the last call.
    pub fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Wait until an outbox is written (at once if one was since the last wait).
    pub async fn written(&self) {
        self.notify.notified().await
    }
}

/// A keyspace's state on this host, shared by its readers and its follower.
pub struct View {
    component: String,
    state: RwLock<State>,
    applied: watch::Sender<u64>,
    outboxes: Arc<OutboxSignal>,
    /// When the stream this is a copy of was created: a stream deleted and
    /// made again (a purge through another host) is another keyspace.
    incarnation: Mutex<Option<String>>,
    /// Tells the follower to start again from the first commit.
    restart: Notify,
    /// Counts those restarts: a follower applies only what it read in the
    /// epoch it started in, never a message of the stream that is gone.
    epoch: std::sync::atomic::AtomicU64,
}

impl View {
    /// An empty view of `component`'s keyspace.
    pub fn new(component: &str, outboxes: Arc<OutboxSignal>) -> Self {
        View {
            component: component.to_string(),
            state: RwLock::default(),
            applied: watch::Sender::new(0),
            outboxes,
            incarnation: Mutex::default(),
            restart: Notify::new(),
            epoch: Default::default(),
        }
    }

    /// The follower's epoch now (see the field).
    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Note the creation time of the stream as the server reports it now;
    /// if it is not the one this copy was made from, drop the copy and
    /// follow the new stream from its first commit.
    pub fn check_incarnation(&self, created: String) {
        let mut incarnation = self.incarnation.lock().unwrap_or_else(|p| p.into_inner());
        if incarnation.as_ref().is_some_and(|known| *known != created) {
            tracing::info!(keyspace = %self.component, "the keyspace was purged and made again; reloading it");
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            *state = State::default();
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(state);
            self.applied.send_replace(0);
            self.restart.notify_one();
        }
        *incarnation = Some(created);
    }

    /// The state as applied so far.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of the last sequence applied, as it changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The last sequence applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Wait until the commit at `seq` has been applied.
    pub async fn applied_up_to(&self, seq: u64) {
        let mut applied = self.applied.subscribe();
        // The sender lives as long as the view, which outlives this call.
        let _ = applied.wait_for(|applied| *applied >= seq).await;
    }

    /// Apply this host's own commit at `seq` if it is the next one; `false`
    /// leaves it to the follower, which has commits before it to apply first.
    pub fn apply_next(&self, seq: u64, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> bool {
        let state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if state.applied + 1 != seq {
            return false;
        }
        self.apply_locked(state, seq, writes);
        true
    }

    /// Apply the commit the stream holds at `seq`, read by a follower that
    /// started in `epoch`, unless it is applied already (this host applies
    /// its own commits as soon as they are acknowledged, and the follower
    /// sees them again) or the stream was made again since.
    fn apply(&self, epoch: u64, seq: u64, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        let state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if seq <= state.applied || self.epoch() != epoch {
            return;
        }
        self.apply_locked(state, seq, writes);
    }

    fn apply_locked(
        &self,
        mut state: std::sync::RwLockWriteGuard<'_, State>,
        seq: u64,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) {
        let mut outbox = false;
        for (key, value) in writes {
            outbox |= key.starts_with(OUTBOX_PREFIX) && value.is_some();
            let guest = is_charged_key(&key);
            let size = (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
            let had = match value {
                Some(value) => state.entries.insert(key.clone(), value),
                None => state.entries.remove(&key),
            };
            if guest {
                let old = had.map_or(0, |v| (key.len() + v.len()) as u64);
                let new = if state.entries.contains_key(&key) { size } else { 0 };
                state.guest_bytes = state.guest_bytes.saturating_sub(old) + new;
            }
        }
        state.applied = seq;
        drop(state);
        self.applied.send_replace(seq);
        if outbox {
            self.outboxes.outbox_written(&self.component);
        }
    }
}

/// How long the follower waits before following again after its consumer failed.
const REFOLLOW: Duration = Duration::from_millis(200);

/// Apply the stream's commits to `view` as they come, for as long as the
/// task runs, resuming after the last one applied whenever the consumer
/// breaks (the server restarted, the connection dropped) or the client
/// reconnects (`reconnected` changes).
pub async fn follow(stream: Stream, view: Arc<View>, mut reconnected: watch::Receiver<u64>) {
    loop {
        reconnected.borrow_and_update();
        // Read together, under the state's lock (a restart changes both).
        let (epoch, start_sequence) = {
            let state = view.read();
            (view.epoch(), state.applied + 1)
        };
        let config = pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence },
            ..Default::default()
        };
        let messages = match stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match messages {
            Ok(mut messages) => {
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        () = view.restart.notified() => break,
                        _ = reconnected.changed() => break,
                    };
                    let Some(message) = message else { break };
                    let message = match message {
                        Ok(message) => message,
                        Err(error) => {
                            tracing::warn!(keyspace = %view.component, %error, "following the keyspace's log failed; following again");
                            break;
                        }
                    };
                    // A follower behind the log, for the read-your-writes
                    // test (`FAILPOINTS=cluster-follow=sleep(MS)`).
                    #[cfg(feature = "failpoints")]
                    fail::fail_point!("cluster-follow");
                    let Ok(info) = message.info() else { continue };
                    let seq = info.stream_sequence;
                    match record::decode(&message.payload) {
                        Ok(writes) => view.apply(epoch, seq, writes),
                        Err(error) => {
                            // Only pitstop writes this stream; a record it
                            // cannot read is skipped, loudly, not retried for ever.
                            tracing::error!(keyspace = %view.component, seq, %error, "unreadable commit record skipped");
                            view.apply(epoch, seq, Vec::new());
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(keyspace = %view.component, %error, "cannot follow the keyspace's log yet");
            }
        }
        tokio::time::sleep(REFOLLOW).await;
    }
}
