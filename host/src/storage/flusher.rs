//! Durability: one thread that flushes sled, with group commit.
//!
//! Every request that wrote must be on disk before it is answered. Rather
//! than one flush per request, callers queue up here and one flush covers
//! every commit that arrived before it started: under load, many requests
//! share one fsync.
//!
//! It is a thread of its own, calling sled's blocking `flush`, on purpose:
//! sled 0.34's `flush_async` runs on sled's small I/O pool and holds the
//! storage's concurrency-control read lock while it waits for that same
//! pool to write the log. With several of those in flight and an atomic
//! batch waiting for the write lock, the pool starves and storage deadlocks
//! (seen here under 8 concurrent writers). One flushing thread never
//! occupies the pool.

use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), FlushError>>;

/// Why a flush did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FlushError {
    /// sled failed to write; every waiter of that flush gets the error.
    #[error("flushing: {0}")]
    Failed(#[source] Arc<sled::Error>),
    /// The flushing thread ended (it panicked, or is shutting down).
    #[error("the flushing thread is gone")]
    Gone,
}

/// Hands out flushes of one database.
pub struct Flusher {
    requests: mpsc::Sender<Waiter>,
}

impl Flusher {
    /// Start the flushing thread for `db`. It ends when the `Flusher` is dropped.
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
        let (requests, incoming) = mpsc::channel::<Waiter>();
        std::thread::Builder::new().name("pitstop-flush".into()).spawn(move || {
            while let Ok(first) = incoming.recv() {
                // Everyone who asked before this flush starts is covered by it.
                let mut waiters = vec![first];
                waiters.extend(incoming.try_iter());
                let result = db.flush().map(drop).map_err(|e| FlushError::Failed(Arc::new(e)));
                for waiter in waiters {
                    let _ = waiter.send(result.clone());
                }
            }
        })?;
        Ok(Flusher { requests })
    }

    /// Wait until everything written before this call is on disk.
    pub async fn flush(&self) -> Result<(), FlushError> {
        let (waiter, done) = oneshot::channel();
        self.requests.send(waiter).map_err(|_| FlushError::Gone)?;
        done.await.map_err(|_| FlushError::Gone)?
    }
}
