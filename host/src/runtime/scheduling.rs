//! How guest code shares the CPU with the gateway and with other components.
//!
//! Guest code is other people's code: it may loop, or burn a second of CPU
//! per request, and it never yields on its own. Three rules keep such a guest
//! from stalling anything but its own requests:
//!
//! 1. **A pool of its own.** Guests run on the [`GuestPool`], a tokio runtime
//!    apart from the one that accepts connections, parses HTTP, answers
//!    `/health`, runs the control plane and the event dispatcher. Its threads
//!    run at a lower scheduling priority (nice [`GUEST_NICE`] on Linux), so
//!    when the CPU is contested the kernel runs the gateway first, and a
//!    busy pool costs the gateway a context switch, not a queue.
//! 2. **Time slices.** A running guest yields to the pool's scheduler at
//!    every epoch tick ([`crate::runtime::engine::EPOCH_TICK`], 10 ms), so other tasks
//!    on its worker get their turn; once its deadline has passed it traps
//!    instead ([`time_slice`]).
//! 3. **Turns.** At most `max_parallel` instances of one component execute
//!    at once ([`crate::resilience::turns::Turns`]); the others wait in line with their deadline
//!    running. A flooded component therefore keeps at most that many tasks
//!    in the pool's run queue, and a request for another component waits
//!    behind a few time slices, not behind the flood. The turn is given up
//!    while the guest waits (for a service it called, or blocked in
//!    `wasi:io/poll` on an outgoing request), so a chain of calls or a slow
//!    upstream never holds turns it is not using.
//!
//! The caller of the pool (the gateway, the dispatcher) waits for an answer
//! only until the deadline plus [`ANSWER_GRACE`]; the guest answers its own
//! 504 well before that, so the grace is a backstop, not the mechanism.

use std::future::Future;

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use wasmtime::{Store, UpdateDeadline};

/// The niceness of guest threads: their CPU weight is about a tenth of the
/// gateway's when both want the CPU, and all of it when the gateway is idle.
pub const GUEST_NICE: i32 = 10;

/// How long after a deadline a caller stops waiting for the pool's answer.
pub const ANSWER_GRACE: Duration = Duration::from_millis(500);

/// The threads guest code runs on.
pub struct GuestPool {
    runtime: Option<tokio::runtime::Runtime>,
    threads: usize,
}

impl GuestPool {
    /// A pool of `threads` worker threads.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("pitstop-guest")
            .enable_time()
            // No IO driver: outgoing connections register with the
            // gateway's runtime (capabilities::http), so the workers never
            // poll one between guests' time slices.
            // New work (a request from the gateway, an event delivery)
            // arrives through the pool's shared queue. By default a worker
            // looks there every 61 polls, which with guests yielding every
            // 10 ms would be 610 ms; look before every poll instead. The
            // check is an atomic load when the queue is empty.
            .global_queue_interval(1)
            // Timers (a wait for a turn or a bulkhead slot) are checked
            // every few polls for the same reason.
            .event_interval(2)
            .on_thread_start(lower_priority)
            .build()?;
        Ok(GuestPool { runtime: Some(runtime), threads })
    }

    /// How many worker threads the pool has.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `task` on the pool. The task is aborted when the returned handle
    /// is dropped: a caller that stops waiting (its client went away, its
    /// deadline passed) takes the work with it.
    pub fn spawn<F>(&self, task: F) -> PoolTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("the pool runs until dropped");
        PoolTask(runtime.spawn(task))
    }
}

impl Drop for GuestPool {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which is not allowed
        // inside another runtime (a test's, or the host's at shutdown); any
        // guest still running is past caring.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task on the [`GuestPool`], aborted when dropped.
pub struct PoolTask<T>(JoinHandle<T>);

impl<T> PoolTask<T> {
    /// The task's output, or `None` if `deadline` passes first (the task is
    /// then aborted) or the task panicked.
    pub async fn until(mut self, deadline: Instant) -> Option<T> {
        match tokio::time::timeout_at(deadline, &mut self.0).await {
            Ok(Ok(output)) => Some(output),
            Ok(Err(error)) => {
                tracing::error!(%error, "a guest task failed");
                None
            }
            Err(_) => None,
        }
    }
}

impl<T> Drop for PoolTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // PRIO_PROCESS with a thread id changes only that thread on Linux.
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), GUEST_NICE)
    {
        tracing::warn!(%error, "could not lower the priority of a guest thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Make the guest in `store` yield at every epoch tick and trap once
/// `deadline` has passed (as [`wasmtime::Trap::Interrupt`]).
pub fn time_slice<T>(store: &mut Store<T>, deadline: Instant) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            // wasmtime's own yield wakes the task while it is being polled,
            // which tokio treats as a yield: the task goes to the back of
            // its worker's queue, and new work from the shared queue goes
            // first. (`tokio::task::yield_now` defers the wake-up instead,
            // and a deferred wake-up lands in the worker's LIFO slot, which
            // runs before the shared queue: with a flood of 200 requests,
            // the busy guests got a slice between every new request, and a
            // request for another component waited 400 ms to be started.)
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_pool_task_is_aborted() {
        let pool = GuestPool::start(1).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = pool.spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        drop(task);
        // The sender is dropped by the abort, long before the sleep ends.
        let closed = tokio::time::timeout(Duration::from_secs(5), rx).await;
        assert!(matches!(closed, Ok(Err(_))), "the task was aborted");
    }
}
