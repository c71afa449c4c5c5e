//! The embedded event queue: [`Bus`] on sled, delivering through the
//! [`crate::events::dispatch`] loop.

use std::sync::Arc;

use crate::events::dispatch::Deliveries;
use crate::events::queue::{Bus, BusError, DeadLetter, DeadLetterPage};
use crate::events::{Dispatching, EventQueue};
use crate::storage::{Keyspace, KeyspaceStore, StorageError};

impl EventQueue for Bus {
    fn next_seq(&self) -> Result<u64, StorageError> {
        Bus::next_seq(self)
    }

    fn note_outbox(&self, component: &str, keyspace: &Arc<dyn Keyspace>) {
        Bus::note_outbox(self, component, keyspace)
    }

    fn restore_outboxes(&self, keyspaces: &dyn KeyspaceStore) -> Result<(), StorageError> {
        Bus::restore_outboxes(self, keyspaces)
    }

    fn dispatch(self: Arc<Self>, deliveries: Deliveries) -> Dispatching {
        Box::pin(crate::events::dispatch::run(self, deliveries))
    }

    fn is_dispatching(&self) -> bool {
        Bus::is_dispatching(self)
    }

    fn backlog(&self, publisher: &str) -> u64 {
        Bus::backlog(self, publisher)
    }

    fn lag(&self) -> Vec<(String, u64)> {
        Bus::lag(self)
    }

    fn dead_letters(
        &self,
        subscriber: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage, BusError> {
        Bus::dead_letters(self, subscriber, after, limit)
    }

    fn dead_letter(&self, subscriber: &str, id: &str) -> Result<DeadLetter, BusError> {
        Bus::dead_letter(self, subscriber, id)
    }

    fn replay(&self, subscriber: &str, id: &str) -> Result<(), BusError> {
        Bus::replay(self, subscriber, id)
    }

    fn discard(&self, subscriber: &str, id: &str) -> Result<(), BusError> {
        Bus::discard(self, subscriber, id)
    }

    fn forget_subscriber(&self, subscriber: &str) -> Result<(), BusError> {
        Bus::forget_subscriber(self, subscriber)
    }
}
