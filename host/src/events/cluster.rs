//! The event queue of a cluster: the embedded [`Bus`] on keyspaces every
//! host shares, dispatched by one host at a time.
//!
//! The queue and the dead letters are platform keyspaces on JetStream
//! (`PITSTOP_QUEUE`, `PITSTOP_DEAD`), so any host lists, replays and
//! discards dead letters, and nothing queued is lost with a host. One host
//! holds the `dispatcher` lease and runs the same dispatch loop as a single
//! host ([`crate::events::dispatch`]): each event is relayed and delivered
//! once for the cluster, in order per lane. The others stand by; when the
//! holder dies its lease expires ([`LEASE_TTL`]) and one of them takes
//! over, finding in the shared queue and the subscribers' handled marks
//! exactly where the last one stopped.
//!
//! Outboxes: whichever host commits, every host applies the commit to its
//! view of the keyspace, and the views tell the dispatcher of outbox
//! entries ([`crate::storage::jetstream::view::OutboxSignal`]).
//!
//! Event numbers ([`ClockSequencer`]) follow the clock, so lanes hold
//! events from different hosts in the order they were published.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::events::dispatch::Deliveries;
use crate::events::queue::{
    Bus, BusError, BusOptions, DeadLetter, DeadLetterPage, Sequencer, now_ms,
};
use crate::events::{Dispatching, EventQueue};
use crate::storage::jetstream::JetStreamStore;
use crate::storage::jetstream::lease::LEASE_TTL;
use crate::storage::reserved::HANDLED_PREFIX;
use crate::storage::{Batch, Keyspace, KeyspaceStore, StorageError};

/// The shared queue, and whether this host is dispatching or standing by.
pub struct ClusterQueue {
    bus: Arc<Bus>,
    store: Arc<JetStreamStore>,
    host: String,
    standing_by: AtomicBool,
}

impl ClusterQueue {
    /// The queue in `store`'s platform keyspaces; `host` names this host in
    /// the dispatcher lease.
    pub fn open(
        store: Arc<JetStreamStore>,
        host: &str,
        options: BusOptions,
    ) -> Result<Self, StorageError> {
        let sequencer = ClockSequencer::claim(&*store.open_platform("HOSTS")?)?;
        let bus = Bus::with_keyspaces(
            Arc::new(sequencer),
            store.open_platform("QUEUE")?,
            store.open_platform("DEAD")?,
            options,
        )
        .keeping_marks();
        Ok(ClusterQueue {
            bus: Arc::new(bus),
            store,
            host: host.to_string(),
            standing_by: AtomicBool::new(false),
        })
    }

    /// Take the dispatcher lease, dispatch while it is held, and take it
    /// again when it is lost, until dropped.
    async fn run(self: Arc<Self>, deliveries: Deliveries) {
        let lease = loop {
            match self.store.lease("dispatcher", &self.host).await {
                Ok(lease) => break lease,
                Err(error) => {
                    tracing::warn!(%error, "cannot reach the dispatcher lease yet");
                    tokio::time::sleep(LEASE_TTL / 3).await;
                }
            }
        };
        let lease = Arc::new(lease);
        loop {
            self.standing_by.store(true, Ordering::Relaxed);
            let revision = lease.acquire().await;
            tracing::info!(host = %self.host, "this host dispatches the cluster's events");
            // Renewed on a task of its own, so no blocking call here can
            // make it late.
            let mut holding = Holding(tokio::spawn({
                let lease = lease.clone();
                async move { lease.hold(revision).await }
            }));
            // Start from what the last dispatcher left: this host's copies
            // may lag, and outboxes may have been written while no host
            // dispatched.
            if let Err(error) = self.catch_up(&*deliveries.keyspaces) {
                tracing::warn!(%error, "catching up with the cluster's queue failed");
            }
            self.standing_by.store(false, Ordering::Relaxed);
            tokio::select! {
                () = crate::events::dispatch::run(self.bus.clone(), deliveries.clone()) => {}
                () = relay_outboxes(&self.store, &self.bus, &*deliveries.keyspaces) => {}
                () = sweep_marks(&*deliveries.keyspaces) => {}
                _ = holding.lost() => {
                    tracing::warn!(host = %self.host, "stopped dispatching: the lease was lost");
                }
            }
        }
    }

    /// Bring the queue and every keyspace up to date, and note their outboxes.
    fn catch_up(&self, keyspaces: &dyn KeyspaceStore) -> Result<(), StorageError> {
        self.bus.queue_synced()?;
        for component in keyspaces.names()? {
            keyspaces.open(&component)?.sync()?;
        }
        self.bus.restore_outboxes(keyspaces)
    }
}

/// The task renewing the lease; aborted when dropped (the dispatcher
/// stopped), so a host never renews a lease it no longer acts on.
struct Holding(tokio::task::JoinHandle<()>);

impl Holding {
    /// Wait until the renewals stop (the renewing task ends when one fails).
    async fn lost(&mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Remove `keyspace`'s handled marks made before `before` (ms), a few
/// hundred per commit so that no commit outgrows a NATS message.
fn sweep(keyspace: &dyn Keyspace, before: u64) -> Result<usize, StorageError> {
    let mut old = Vec::new();
    for entry in keyspace.scan_prefix(HANDLED_PREFIX) {
        let (key, at) = entry?;
        if u64::from_be_bytes(at.try_into().unwrap_or_default()) < before {
            old.push(key);
        }
    }
    for chunk in old.chunks(256) {
        let mut batch = Batch::default();
        for key in chunk {
            batch.remove(key.clone());
        }
        keyspace.apply(batch)?;
    }
    Ok(old.len())
}

/// How long a handled mark is kept after its entry was finished: far
/// longer than any delivery can outlive the lease of the host running it.
const MARK_RETENTION_MS: u64 = 10 * 60 * 1000;

/// Every minute, drop the handled marks older than [`MARK_RETENTION_MS`]
/// from every keyspace (the cluster's bus keeps them, see
/// [`Bus::keeping_marks`]).
async fn sweep_marks(keyspaces: &dyn KeyspaceStore) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        let swept = (|| -> Result<usize, StorageError> {
            let before = now_ms().saturating_sub(MARK_RETENTION_MS);
            let mut swept = 0;
            for component in keyspaces.names()? {
                // One keyspace failing does not stop the others' sweep.
                match sweep(&*keyspaces.open(&component)?, before) {
                    Ok(n) => swept += n,
                    Err(error) => {
                        tracing::warn!(%component, %error, "sweeping handled marks failed")
                    }
                }
            }
            Ok(swept)
        })();
        match swept {
            Ok(0) => {}
            Ok(swept) => tracing::debug!(swept, "handled marks swept"),
            Err(error) => tracing::warn!(%error, "sweeping handled marks failed"),
        }
    }
}

/// Hand the bus every outbox another host's commit wrote, as this host
/// applies the commit.
async fn relay_outboxes(store: &JetStreamStore, bus: &Bus, keyspaces: &dyn KeyspaceStore) {
    let signal = store.outboxes();
    loop {
        signal.written().await;
        for component in signal.take() {
            match keyspaces.open(&component) {
                Ok(keyspace) => bus.note_outbox(&component, &keyspace),
                Err(error) => tracing::warn!(%component, %error, "cannot open an outbox"),
            }
        }
    }
}

impl EventQueue for ClusterQueue {
    fn next_seq(&self) -> Result<u64, StorageError> {
        self.bus.next_seq()
    }

    fn note_outbox(&self, component: &str, keyspace: &Arc<dyn Keyspace>) {
        self.bus.note_outbox(component, keyspace)
    }

    fn restore_outboxes(&self, keyspaces: &dyn KeyspaceStore) -> Result<(), StorageError> {
        self.bus.restore_outboxes(keyspaces)
    }

    fn dispatch(self: Arc<Self>, deliveries: Deliveries) -> Dispatching {
        Box::pin(self.run(deliveries))
    }

    fn is_dispatching(&self) -> bool {
        self.standing_by.load(Ordering::Relaxed) || self.bus.is_dispatching()
    }

    fn backlog(&self, publisher: &str) -> u64 {
        self.bus.backlog(publisher)
    }

    fn lag(&self) -> Vec<(String, u64)> {
        self.bus.lag()
    }

    fn dead_letters(
        &self,
        subscriber: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage, BusError> {
        self.bus.queue_synced()?;
        self.bus.dead_letters(subscriber, after, limit)
    }

    fn dead_letter(&self, subscriber: &str, id: &str) -> Result<DeadLetter, BusError> {
        self.bus.queue_synced()?;
        self.bus.dead_letter(subscriber, id)
    }

    fn replay(&self, subscriber: &str, id: &str) -> Result<(), BusError> {
        self.bus.queue_synced()?;
        self.bus.replay(subscriber, id)
    }

    fn discard(&self, subscriber: &str, id: &str) -> Result<(), BusError> {
        self.bus.queue_synced()?;
        self.bus.discard(subscriber, id)
    }

    fn forget_subscriber(&self, subscriber: &str) -> Result<(), BusError> {
        self.bus.forget_subscriber(subscriber)
    }
}

/// Bits of an event number below the millisecond: a counter, then the host.
const HOST_BITS: u32 = 10;
const COUNTER_BITS: u32 = 10;

/// Event numbers from the clock: `ms << 20 | counter << 10 | host`. Unique
/// across hosts (each claims its own number when it starts), increasing on
/// each host and across its restarts, and in publish order across hosts as
/// far as their clocks agree.
pub struct ClockSequencer {
    host: u64,
    last: Mutex<u64>,
}

impl ClockSequencer {
    /// A sequencer with the next host number counted in `hosts`.
    fn claim(hosts: &dyn Keyspace) -> Result<Self, StorageError> {
        const KEY: &[u8] = b"next";
        let mut claimed = Ok(0);
        hosts.transact(&mut || {
            let next = match hosts.get(KEY) {
                Ok(value) => {
                    value.map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
                }
                Err(error) => {
                    claimed = Err(error);
                    return None;
                }
            };
            claimed = Ok(next);
            let mut batch = Batch::default();
            batch.insert(KEY, (next + 1).to_be_bytes());
            Some(batch)
        })?;
        let claimed = claimed?;
        Ok(ClockSequencer { host: claimed % (1 << HOST_BITS), last: Mutex::new(0) })
    }
}

impl Sequencer for ClockSequencer {
    fn next(&self) -> Result<u64, StorageError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = (now_ms() << (HOST_BITS + COUNTER_BITS)) | self.host;
        // Past the last one (same ms, or a clock that stepped back): one
        // more in the counter, the host bits unchanged.
        let next = if now > *last { now } else { *last + (1 << HOST_BITS) };
        *last = next;
        Ok(next)
    }
}
