//! The dispatcher: relays published events from the outboxes to their
//! subscribers' queues, and delivers queued events.
//!
//! One loop relays, then looks at the head of every lane (subscriber x topic) and starts
//! a delivery task for each head that is due, whose subscriber is deployed,
//! and whose lane has no delivery in flight. A lane therefore delivers in
//! order, one event at a time, while lanes run side by side: an event that
//! keeps failing holds up only the events behind it in its own lane, and
//! only until it is dead-lettered.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::queue::{QueuedEvent, lane_of, now_ms, subscriber_of};
use crate::runtime::{Delivery, Runtime};

/// The longest the loop sleeps without being woken, so a subscriber that
/// comes back after an undeploy is picked up.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Deliver queued events until the task is aborted. Deliveries cut short by
/// an abort commit nothing, so they are simply made again after a restart.
pub async fn run(runtime: Arc<Runtime>) {
    let in_flight: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    let _running = runtime.bus().dispatching_guard();
    loop {
        let subscribers: Vec<_> = (runtime.registry().active().values())
            .map(|deployment| (deployment.name.clone(), deployment.topics.clone()))
            .collect();
        if let Err(error) = runtime.bus().relay(&subscribers) {
            tracing::error!(%error, "relaying published events failed; retrying");
        }
        let next_due =
            if runtime.bus().is_paused() { None } else { start_due(&runtime, &in_flight) };
        let wait = next_due
            .map_or(IDLE_POLL, |due| Duration::from_millis(due.saturating_sub(now_ms())))
            .min(IDLE_POLL);
        tokio::select! {
            _ = runtime.bus().wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Start a delivery for every lane head that can go now; returns when the
/// earliest head that cannot go yet becomes due.
fn start_due(runtime: &Arc<Runtime>, in_flight: &Arc<Mutex<HashSet<Vec<u8>>>>) -> Option<u64> {
    let bus = runtime.bus();
    let now = now_ms();
    let mut next_due: Option<u64> = None;
    for (key, value) in bus.lane_heads() {
        let lane = lane_of(&key).to_vec();
        if in_flight.lock().unwrap_or_else(|p| p.into_inner()).contains(&lane) {
            continue;
        }
        let event = match QueuedEvent::decode(&value) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, "dropping an unreadable queue entry");
                let _ = bus.queue().remove(&key);
                continue;
            }
        };
        if event.not_before > now {
            next_due = Some(next_due.map_or(event.not_before, |d| d.min(event.not_before)));
            continue;
        }
        let subscriber = subscriber_of(&key).to_string();
        // Not deployed: the lane waits for it to come back.
        let Some(deployment) = runtime.registry().get(&subscriber) else { continue };
        if bus.was_handled(&deployment.keyspace, &key) {
            // Handled and committed before a crash cut the clean-up short.
            if let Err(error) = bus.finish(&deployment.keyspace, &key) {
                tracing::error!(%error, "could not drop a handled event");
            }
            continue;
        }
        if !deployment.topics.subscribes.contains(&event.topic) {
            runtime.metrics().dead_lettered(&subscriber);
            bus.bury(
                &key,
                event,
                format!("version {} of {subscriber} no longer subscribes", deployment.version),
            );
            continue;
        }
        in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(lane.clone());
        let runtime = runtime.clone();
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            deliver(&runtime, &deployment.keyspace, &subscriber, key, event).await;
            in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&lane);
            runtime.bus().wake();
        });
    }
    next_due
}

async fn deliver(
    runtime: &Arc<Runtime>,
    keyspace: &sled::Tree,
    subscriber: &str,
    key: Vec<u8>,
    event: QueuedEvent,
) {
    let bus = runtime.bus();
    let mut attempt = event.clone();
    attempt.attempts += 1;
    let outcome = runtime.deliver(subscriber, &attempt, key.clone()).await;
    let result = match outcome {
        Delivery::Handled => {
            #[cfg(feature = "failpoints")]
            if fail_point_set("dispatch-after-handled-commit") {
                die_after_flushing(runtime).await;
            }
            tracing::debug!(subscriber, event = attempt.id, topic = attempt.topic, "delivered");
            runtime.metrics().delivered(subscriber);
            bus.finish(keyspace, &key)
        }
        Delivery::Failed(reason) => {
            tracing::info!(
                subscriber,
                event = attempt.id,
                topic = attempt.topic,
                attempt = attempt.attempts,
                reason,
                "delivery failed"
            );
            bus.retry_or_bury(&key, attempt, reason).map(|died| {
                if died {
                    runtime.metrics().dead_lettered(subscriber);
                } else {
                    runtime.metrics().retried(subscriber);
                }
            })
        }
        // Not the handler's fault (circuit open, overloaded, being swapped):
        // the attempt does not count.
        Delivery::NotNow(wait) => {
            // Debug level: an overloaded subscriber comes back here every
            // half second. Tests turn it on to see a postponement happen.
            tracing::debug!(
                subscriber,
                event = event.id,
                topic = event.topic,
                wait_ms = wait.as_millis() as u64,
                "subscriber cannot take the event now; postponed, not counted as an attempt"
            );
            bus.postpone(&key, event, wait)
        }
    };
    if let Err(error) = result {
        tracing::error!(%error, subscriber, "could not record a delivery's outcome");
    }
}

/// Whether the fail point `name` is set to `return` (the `failpoints`
/// feature; `FAILPOINTS=name=return` in the environment).
#[cfg(feature = "failpoints")]
fn fail_point_set(name: &str) -> bool {
    fail::fail_point!(name, |_| true);
    false
}

/// Die as `kill -9` would, right after a handler's commit and before its
/// queue entry is removed: the crash the handled mark is there for.
///
/// An event handler's commit is not flushed (see `Runtime::run`); sled
/// writes it out within 500 ms. A crash before that loses the writes with
/// the mark (a plain redelivery, as after a crash mid-handling), so this
/// flushes first: the case under test is the commit on disk, the queue
/// entry still there.
#[cfg(feature = "failpoints")]
async fn die_after_flushing(runtime: &Runtime) {
    if let Err(error) = runtime.flush().await {
        eprintln!("fail point: flushing failed: {error}");
    }
    // stderr, unbuffered: the line is out before the process is gone.
    eprintln!("fail point dispatch-after-handled-commit: killing the process");
    #[cfg(target_os = "linux")]
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort();
}
