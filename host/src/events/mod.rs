//! Events after they are committed: the durable queue (outbox relay, one
//! lane per subscriber and topic, retries, dead letters) and the dispatcher
//! that delivers from it. Publishing itself is the `bus` capability
//! ([`crate::capabilities::bus`]); the commit that writes the outbox is the
//! runtime's ([`crate::runtime::commit`]).
//!
//! The runtime and the control plane see the queue only as an
//! [`EventQueue`]; the embedded default is [`queue::Bus`] with the
//! [`dispatch`] loop, on sled. A distributed queue is a second
//! implementation: it takes the committed outbox entries and delivers them
//! to the [`dispatch::Subscribers`] it is given. The trait lives here, not
//! in the runtime, because the runtime is one of those subscribers: the
//! dependency points from the runtime to the events, never back.

pub mod cluster;
pub mod dispatch;
pub mod embedded;
pub mod queue;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::events::dispatch::Deliveries;
use crate::events::queue::{BusError, DeadLetter, DeadLetterPage};
use crate::storage::{Keyspace, KeyspaceStore, StorageError};

/// The dispatcher's work, until it is dropped.
pub type Dispatching = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A durable event queue: relays what commits put in the keyspaces'
/// outboxes, delivers it to the subscribers in order per lane, retries, and
/// keeps what keeps failing as dead letters.
pub trait EventQueue: Send + Sync + 'static {
    /// A number for a new event: unique, and increasing across restarts.
    fn next_seq(&self) -> Result<u64, StorageError>;

    /// `component`'s keyspace holds committed outbox entries to relay.
    fn note_outbox(&self, component: &str, keyspace: &Arc<dyn Keyspace>);

    /// Find the outboxes a previous run left entries in.
    fn restore_outboxes(&self, keyspaces: &dyn KeyspaceStore) -> Result<(), StorageError>;

    /// Relay and deliver, for as long as the future runs.
    fn dispatch(self: Arc<Self>, deliveries: Deliveries) -> Dispatching;

    /// Whether the dispatcher is running, for readiness.
    fn is_dispatching(&self) -> bool;

    /// Events queued and not yet handled, per subscriber that has any.
    fn lag(&self) -> Vec<(String, u64)>;

    /// Bytes of `publisher`'s events queued or dead-lettered, which count
    /// against its keyspace quota. (On a cluster: those this host relayed
    /// or handled, and those stored when it started.)
    fn backlog(&self, publisher: &str) -> u64;

    /// A page of dead letters, for `subscriber` only when given, after the
    /// letter `after` (`subscriber/id`) when given (see [`queue::Bus::dead_letters`]).
    fn dead_letters(
        &self,
        subscriber: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage, BusError>;

    /// One dead letter, its payload whole.
    fn dead_letter(&self, subscriber: &str, id: &str) -> Result<DeadLetter, BusError>;

    /// Queue a dead letter again, with a fresh count of attempts.
    fn replay(&self, subscriber: &str, id: &str) -> Result<(), BusError>;

    /// Drop a dead letter for good.
    fn discard(&self, subscriber: &str, id: &str) -> Result<(), BusError>;

    /// Forget everything queued for, or dead-lettered at, `subscriber`.
    fn forget_subscriber(&self, subscriber: &str) -> Result<(), BusError>;
}
