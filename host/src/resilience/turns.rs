//! Turns at the CPU: at most `max_parallel` instances of one component
//! execute guest code at once, the others wait in line with their deadline
//! running (see [`crate::runtime::scheduling`] for why). The turn is given
//! up while the guest waits for a service it called.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The turns of one component at the CPU: at most `max_parallel` of its
/// instances execute guest code at once.
#[derive(Clone)]
pub struct Turns {
    slots: Arc<Semaphore>,
}

/// The deadline passed while waiting for a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the deadline passed while waiting for a turn")]
pub struct NoTurn;

impl Turns {
    /// `max_parallel` instances at once (at least one).
    pub fn new(max_parallel: u32) -> Self {
        Turns { slots: Arc::new(Semaphore::new(max_parallel.max(1) as usize)) }
    }

    /// Wait for a turn until `deadline`. Waiters are served in order.
    pub async fn take(&self, deadline: Instant) -> Result<Turn, NoTurn> {
        let mut turn = Turn { slots: Some(self.slots.clone()), permit: None };
        turn.resume(deadline).await?;
        Ok(turn)
    }
}

/// One instance's turn at the CPU; given back when dropped.
#[derive(Default)]
pub struct Turn {
    slots: Option<Arc<Semaphore>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Turn {
    /// A turn that waits for nothing (the test runner's: it runs alone).
    pub fn unlimited() -> Self {
        Turn::default()
    }

    /// Give the turn to the next in line while this instance waits for
    /// something else.
    pub fn pause(&mut self) {
        self.permit = None;
    }

    /// Take a turn again after [`Turn::pause`], waiting until `deadline`.
    pub async fn resume(&mut self, deadline: Instant) -> Result<(), NoTurn> {
        let Some(slots) = &self.slots else { return Ok(()) };
        if self.permit.is_some() {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => {
                self.permit = Some(permit);
                Ok(())
            }
            // The semaphore is never closed; treat it like a deadline anyway.
            Ok(Err(_)) | Err(_) => Err(NoTurn),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn turns_are_taken_in_order_and_given_back() {
        let turns = Turns::new(1);
        let far = Instant::now() + Duration::from_secs(60);
        let mut first = turns.take(far).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(turns.take(soon).await.err(), Some(NoTurn), "one turn at a time");
        first.pause();
        let second = turns.take(far).await.expect("a paused turn lets the next one in");
        let resumed = tokio::time::timeout(Duration::from_millis(50), first.resume(far)).await;
        assert!(resumed.is_err(), "resuming waits for the turn in use");
        drop(second);
        first.resume(far).await.unwrap();
    }

    #[tokio::test]
    async fn an_unlimited_turn_never_waits() {
        let mut turn = Turn::unlimited();
        turn.pause();
        turn.resume(Instant::now()).await.unwrap();
    }
}
