//! The dispatcher: relays published events from the outboxes to their
//! subscribers' queues, and delivers queued events.
//!
//! One loop relays, then looks at the head of every lane (subscriber x topic) and starts
//! a delivery task for each head that is due, whose subscriber is deployed,
//! and whose lane has no delivery in flight. A lane therefore delivers in
//! order, one event at a time, while lanes run side by side: an event that
//! keeps failing holds up only the events behind it in its own lane, and
//! only until it is dead-lettered.
//!
//! The dispatcher knows the components only as [`Subscribers`]: which are
//! active, what they subscribe to, and a way to run one delivery. The
//! runtime is that implementation; the dispatcher never reaches into it.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::capabilities::bus::Topics;
use crate::events::queue::{Bus, QueuedEvent, lane_of, now_ms, subscriber_of};
use crate::metrics::Metrics;
use crate::storage::{Keyspace, KeyspaceStore};

/// How the delivery of one event went.
#[derive(Debug)]
pub enum Delivery {
    /// The handler returned `ok`; its writes and the handled mark are committed.
    Handled,
    /// The handler failed (error, trap, deadline): counts as an attempt.
    Failed(String),
    /// The subscriber could not take it now; try again after this long
    /// without counting an attempt.
    NotNow(Duration),
}

/// The active version of a subscribing component, as the dispatcher sees it.
pub struct Subscriber {
    /// Its version number, for the reason of a dead letter.
    pub version: u64,
    /// The topics it declared.
    pub topics: Arc<Topics>,
    /// Its keyspace, where its commit marks the events it handled.
    pub keyspace: Arc<dyn Keyspace>,
}

/// A delivery in progress, boxed so [`Subscribers`] stays object safe.
pub type Delivering<'a> = Pin<Box<dyn Future<Output = Delivery> + Send + 'a>>;

/// The components events are delivered to.
pub trait Subscribers: Send + Sync + 'static {
    /// Every active component, with the topics it declared.
    fn active(&self) -> Vec<(Arc<str>, Arc<Topics>)>;

    /// The active version of `name`, if it is deployed.
    fn subscriber(&self, name: &str) -> Option<Subscriber>;

    /// Deliver `event`, queued at `queue_key`, to the active version of `name`.
    fn deliver<'a>(
        &'a self,
        name: &'a str,
        event: &'a QueuedEvent,
        queue_key: Vec<u8>,
    ) -> Delivering<'a>;
}

/// Where the dispatcher delivers, and what it reports to.
#[derive(Clone)]
pub struct Deliveries {
    /// Who it delivers to.
    pub subscribers: Arc<dyn Subscribers>,
    /// Where deliveries, retries and dead letters are counted.
    pub metrics: Arc<Metrics>,
    /// The keyspaces' store; flushed by a fail point only.
    pub keyspaces: Arc<dyn KeyspaceStore>,
}

/// The longest the loop sleeps without being woken, so a subscriber that
/// comes back after an undeploy is picked up.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// The embedded queue and where it delivers.
#[derive(Clone)]
struct Dispatcher {
    bus: Arc<Bus>,
    deliveries: Deliveries,
}

/// Deliver queued events until the task is aborted. Deliveries cut short by
/// an abort commit nothing, so they are simply made again after a restart.
pub async fn run(bus: Arc<Bus>, deliveries: Deliveries) {
    let dispatcher = Dispatcher { bus, deliveries };
    let in_flight: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    let _running = dispatcher.bus.dispatching_guard();
    loop {
        let more = match dispatcher.bus.relay(&dispatcher.deliveries.subscribers.active()) {
            Ok(more) => more,
            Err(error) => {
                tracing::error!(%error, "relaying published events failed; retrying");
                false
            }
        };
        // Below the disk's watermark a delivery could neither commit nor be
        // postponed: it would run again at once, for ever. Deliveries wait
        // for space instead (checked again every IDLE_POLL).
        let held_back = dispatcher.bus.is_paused() || crate::storage::disk::refusal().is_some();
        let next_due = if held_back { None } else { start_due(&dispatcher, &in_flight) };
        if more {
            // Outboxes still hold events: relay the next share at once,
            // letting the deliveries just started run first.
            tokio::task::yield_now().await;
            continue;
        }
        let wait = next_due
            .map_or(IDLE_POLL, |due| Duration::from_millis(due.saturating_sub(now_ms())))
            .min(IDLE_POLL);
        tokio::select! {
            _ = dispatcher.bus.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Start a delivery for every lane head that can go now; returns when the
/// earliest head that cannot go yet becomes due.
fn start_due(dispatcher: &Dispatcher, in_flight: &Arc<Mutex<HashSet<Vec<u8>>>>) -> Option<u64> {
    let bus = &dispatcher.bus;
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
        let Some(deployment) = dispatcher.deliveries.subscribers.subscriber(&subscriber) else {
            continue;
        };
        if bus.was_handled(&*deployment.keyspace, &key) {
            // Handled and committed before a crash cut the clean-up short.
            if let Err(error) = bus.finish(&*deployment.keyspace, &key) {
                tracing::error!(%error, "could not drop a handled event");
            }
            continue;
        }
        if !deployment.topics.subscribes.contains(&event.topic) {
            dispatcher.deliveries.metrics.dead_lettered(&subscriber);
            bus.bury(
                &key,
                event,
                format!("version {} of {subscriber} no longer subscribes", deployment.version),
            );
            continue;
        }
        in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(lane.clone());
        let dispatcher = dispatcher.clone();
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            deliver(&dispatcher, &*deployment.keyspace, &subscriber, key, event).await;
            in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&lane);
            dispatcher.bus.wake();
        });
    }
    next_due
}

async fn deliver(
    dispatcher: &Dispatcher,
    keyspace: &dyn Keyspace,
    subscriber: &str,
    key: Vec<u8>,
    event: QueuedEvent,
) {
    let (bus, metrics) = (&dispatcher.bus, &dispatcher.deliveries.metrics);
    let mut attempt = event.clone();
    attempt.attempts += 1;
    let outcome =
        dispatcher.deliveries.subscribers.deliver(subscriber, &attempt, key.clone()).await;
    let result = match outcome {
        Delivery::Handled => {
            #[cfg(feature = "failpoints")]
            if fail_point_set("dispatch-after-handled-commit") {
                die_after_flushing(&*dispatcher.deliveries.keyspaces).await;
            }
            tracing::debug!(subscriber, event = attempt.id, topic = attempt.topic, "delivered");
            metrics.delivered(subscriber);
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
                    metrics.dead_lettered(subscriber);
                } else {
                    metrics.retried(subscriber);
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
/// An event handler's commit is not flushed (see `crate::runtime`); sled
/// writes it out within 500 ms. A crash before that loses the writes with
/// the mark (a plain redelivery, as after a crash mid-handling), so this
/// flushes first: the case under test is the commit on disk, the queue
/// entry still there.
#[cfg(feature = "failpoints")]
async fn die_after_flushing(keyspaces: &dyn KeyspaceStore) {
    if let Err(error) = keyspaces.flush().await {
        eprintln!("fail point: flushing failed: {error}");
    }
    // stderr, unbuffered: the line is out before the process is gone.
    eprintln!("fail point dispatch-after-handled-commit: killing the process");
    #[cfg(target_os = "linux")]
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort();
}
