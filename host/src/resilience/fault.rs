//! Faults injected on purpose, to see the breaker and the callers cope: the
//! test harness sets one per component ([`crate::runtime::Runtime::inject_fault`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::invoke::InvokeFailure;

/// A failure injected into every call of one component, by the test
/// [`crate::testing::harness::Harness`]. The breaker counts it like the real thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The guest traps.
    Trap,
    /// The guest runs until its deadline.
    Timeout,
    /// The platform refuses the call as overloaded.
    Unavailable,
    /// The call runs normally after this long.
    Delay(Duration),
}

impl Fault {
    /// Strike a call whose deadline is `deadline`: fail it, or (a delay)
    /// hold it back and let it run.
    pub async fn strike(self, deadline: Instant) -> Result<(), InvokeFailure> {
        let deadline_ms = deadline.saturating_duration_since(Instant::now()).as_millis() as u64;
        match self {
            Fault::Trap => Err(InvokeFailure::Trapped("injected fault".into())),
            Fault::Timeout => {
                tokio::time::sleep_until(deadline).await;
                Err(InvokeFailure::Timeout { deadline_ms })
            }
            Fault::Unavailable => Err(InvokeFailure::Unavailable("injected fault".into())),
            Fault::Delay(delay) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
        }
    }
}
