//! Where a keyspace's log ends, asked of the server once for many readers.
//!
//! Read-your-writes costs every invocation one request for the stream's last
//! sequence. Under load, many invocations of one component ask at once:
//! they share requests instead. Each caller takes a ticket; a request sent
//! after a caller took its ticket answers for it too (everything
//! acknowledged before the caller started is below the sequence that request
//! returns), so while one request is out, the callers that arrive wait for
//! the next, which answers for all of them: one request per round trip,
//! however many readers.

use std::sync::Mutex;

use async_nats::jetstream::stream::Stream;
use tokio::sync::Notify;

use crate::storage::StorageError;

/// What the server said of the stream: its last sequence, and when it was
/// created (a stream made again is another keyspace).
#[derive(Debug, Clone, Default)]
pub struct LogEnd {
    /// The last sequence.
    pub last: u64,
    /// The stream's creation time, as text.
    pub created: String,
}

#[derive(Default)]
struct Rounds {
    /// Tickets taken so far.
    taken: u64,
    /// The highest ticket the last finished request answers for.
    covered: u64,
    /// What that request returned.
    end: LogEnd,
    /// Whether a request is out.
    running: bool,
}

/// Shared requests for the end of one stream's log.
#[derive(Default)]
pub struct Barrier {
    rounds: Mutex<Rounds>,
    done: Notify,
}

impl Barrier {
    /// The end of `stream`'s log as of a moment after this call began.
    pub async fn log_end(&self, stream: &Stream) -> Result<LogEnd, StorageError> {
        let ticket = {
            let mut rounds = self.lock();
            rounds.taken += 1;
            rounds.taken
        };
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            // Registered before the state is looked at: no wake-up is lost.
            notified.as_mut().enable();
            let covers = {
                let mut rounds = self.lock();
                if rounds.covered >= ticket {
                    return Ok(rounds.end.clone());
                }
                if rounds.running {
                    None
                } else {
                    rounds.running = true;
                    Some(rounds.taken)
                }
            };
            let Some(covers) = covers else {
                notified.await;
                continue;
            };
            // This caller asks for everyone who took a ticket so far.
            let running = Running(self);
            let end = stream
                .get_info()
                .await
                .map(|info| LogEnd {
                    last: info.state.last_sequence,
                    created: format!("{:?}", info.created),
                })
                .map_err(|e| {
                    StorageError::Unavailable(format!("reading the keyspace's last commit: {e}"))
                });
            if let Ok(end) = &end {
                let mut rounds = self.lock();
                if covers > rounds.covered {
                    rounds.covered = covers;
                    rounds.end = end.clone();
                }
            }
            // Wakes the waiters: answered, or one of them asks again.
            drop(running);
            return end;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request out; when it ends (answered, failed, or its caller gave up),
/// the waiting callers are woken to take over or take its answer.
struct Running<'a>(&'a Barrier);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.lock().running = false;
        self.0.done.notify_waiters();
    }
}
