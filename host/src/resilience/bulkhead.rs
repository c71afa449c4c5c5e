//! The bulkhead: caps the instances of one deployment running at once, so a
//! flood of calls to one component cannot pile up unbounded work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::invoke::InvokeFailure;

/// Caps the instances of one deployment running at once. Excess calls wait
/// for a slot, at most as many as there are slots and never past their
/// deadline; calls beyond that are refused at once, so a flood cannot pile
/// up unbounded work behind a slow component.
pub struct Bulkhead {
    slots: Arc<Semaphore>,
    waiting: AtomicU32,
    max_waiting: u32,
}

impl Bulkhead {
    /// `slots` instances at once.
    pub fn new(slots: u32) -> Self {
        Bulkhead {
            slots: Arc::new(Semaphore::new(slots.max(1) as usize)),
            waiting: AtomicU32::new(0),
            max_waiting: slots.max(1),
        }
    }

    /// A slot, waiting for one until `deadline` if all are taken.
    pub async fn enter(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, InvokeFailure> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(InvokeFailure::Unavailable("too many concurrent calls".into()));
        }
        let waited_from = Instant::now();
        let slot = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match slot {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_)) => Err(InvokeFailure::Internal("bulkhead closed".into())),
            Err(_) => Err(InvokeFailure::Timeout {
                deadline_ms: deadline.saturating_duration_since(waited_from).as_millis() as u64,
            }),
        }
    }
}
