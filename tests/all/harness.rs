//! `pitstop_host::testing::harness::Harness`: the services in-process, with faults
//! injected into services and into event delivery.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pitstop_host::invoke::InvokeFailure;
use pitstop_host::resilience::fault::Fault;
use pitstop_host::testing::harness::Harness;
use serde_json::{Value, json};

/// The client the tests act as: the gateway verified it as alice.
const ALICE: Option<(&str, &[&str])> = Some(("alice", &[]));

fn json_of(response: &pitstop_host::bindings::types::Response) -> Value {
    serde_json::from_slice(&response.body).unwrap()
}

async fn register(harness: &Harness, email: &str) -> String {
    let body = json!({"name": "H", "email": email}).to_string();
    let created = harness.send_as(ALICE, "POST", "/users", body).await.unwrap();
    assert_eq!(created.status, 201);
    json_of(&created)["id"].as_str().unwrap().to_string()
}

fn order(user: &str, price: i64) -> String {
    json!({"user_id": user, "items": [{"sku": "s", "quantity": 1, "price": price}]}).to_string()
}

#[tokio::test]
async fn requests_events_and_keyspaces_in_process() {
    let harness = Harness::with_builtins().await.unwrap();
    let user = register(&harness, "h1@example.com").await;
    harness.settle().await;
    let published = harness.published("user.created");
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].source, "user");
    // The order service's read model got it.
    assert!(harness.keyspace("order").contains_key(&format!("user/{user}")));

    let placed = harness.send_as(ALICE, "POST", "/orders", order(&user, 250)).await.unwrap();
    assert_eq!(json_of(&placed)["status"], "CONFIRMED");
    harness.settle().await;
    assert_eq!(harness.published("order.confirmed").len(), 1);
    assert_eq!(harness.published("payment.completed").len(), 1);
    assert!(harness.send("GET", "/nowhere", "").await.is_err(), "no route");
}

#[tokio::test]
async fn injected_faults_drive_the_saga_and_the_fallback() {
    let harness = Harness::with_builtins().await.unwrap();
    let user = register(&harness, "h2@example.com").await;
    harness.settle().await;

    // Payment traps on every call: no charge, no compensation, 202 PENDING.
    harness.inject("payment", Some(Fault::Trap));
    let placed = harness.send_as(ALICE, "POST", "/orders", order(&user, 100)).await.unwrap();
    assert_eq!(placed.status, 202);
    assert_eq!(json_of(&placed)["status"], "PENDING");

    // The user service traps: the read model answers instead. (A user
    // service that times out would take the order's deadline with it: a
    // nested call shares its caller's.)
    harness.inject("payment", None);
    harness.inject("user", Some(Fault::Trap));
    let placed = harness.send_as(ALICE, "POST", "/orders", order(&user, 100)).await.unwrap();
    assert_eq!(json_of(&placed)["status"], "CONFIRMED");
    harness.inject("user", Some(Fault::Unavailable));
    let unknown =
        harness.send_as(ALICE, "POST", "/orders", order("usr_nobody", 100)).await.unwrap();
    assert_eq!(unknown.status, 503);
}

#[tokio::test]
async fn events_can_be_dropped_delayed_and_redelivered() {
    let harness = Harness::with_builtins().await.unwrap();
    harness.pause_deliveries();
    let dropped = register(&harness, "h3@example.com").await;
    let delayed = register(&harness, "h4@example.com").await;
    harness.settle().await; // relayed, not delivered: deliveries are paused
    let events = harness.published("user.created");
    assert_eq!(events.len(), 2);
    assert_eq!(harness.drop_event(&events[0].id).unwrap(), 1, "one subscriber: order");
    assert_eq!(harness.delay_event(&events[1].id, Duration::from_millis(300)).unwrap(), 1);
    harness.resume_deliveries();
    harness.settle().await;
    let read_model = harness.keyspace("order");
    assert!(
        !read_model.contains_key(&format!("user/{dropped}")),
        "the dropped event never arrived"
    );
    assert!(!read_model.contains_key(&format!("user/{delayed}")), "not yet: delayed");
    tokio::time::sleep(Duration::from_millis(350)).await;
    harness.settle().await;
    assert!(harness.keyspace("order").contains_key(&format!("user/{delayed}")));

    // A duplicate delivery is harmless: the handler runs again (one more
    // delivery counted) and the read model holds the same user, unchanged.
    let delivered = || {
        let metrics = harness.metrics().encode();
        crate::support::sample(
            &crate::support::parse_metrics(&metrics),
            r#"pitstop_bus_delivered_total{subscriber="order"}"#,
        )
    };
    let (runs, before) = (delivered(), harness.keyspace("order"));
    assert_eq!(runs, 1.0, "one delivery so far: the dropped event never ran");
    harness.redeliver(&events[1], "order").unwrap();
    harness.settle().await;
    assert_eq!(delivered(), runs + 1.0, "the duplicate was delivered");
    let after = harness.keyspace("order");
    let users: Vec<&String> = after.keys().filter(|k| k.starts_with("user/")).collect();
    assert_eq!(users, [&format!("user/{delayed}")]);
    assert_eq!(after.get(users[0]), before.get(users[0]), "the same user, unchanged");
}

/// A component loaded from a file is served at its route; `call` reaches a
/// component without the routes, as another service would; a `Delay` fault
/// holds calls back that long and lets them run; a `Timeout` fault holds
/// them until the deadline and fails them there.
#[tokio::test]
async fn loaded_components_and_timing_faults() {
    let harness = Harness::with_builtins().await.unwrap();
    let trap = crate::support::test_components().join("trap.wasm");
    harness.load("trap", &trap, Some("/trap")).await.unwrap();
    assert_eq!(harness.send("GET", "/trap/ok", "").await.unwrap().status, 200);
    assert_eq!(harness.call("trap", "GET", "/trap/ok", "").await.unwrap().status, 200);

    harness.inject("trap", Some(Fault::Delay(Duration::from_millis(300))));
    let sent_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let delayed = harness.call("trap", "GET", "/trap/sleep/0", "").await.unwrap();
    assert_eq!(delayed.status, 200, "a delayed call runs");
    let ran_ms = json_of(&delayed)["started_ms"].as_u64().unwrap();
    assert!(ran_ms >= sent_ms + 300, "the guest ran {} ms after the call", ran_ms - sent_ms);

    harness.inject("trap", Some(Fault::Timeout));
    let started = Instant::now();
    let timed_out = harness.call("trap", "GET", "/trap/ok", "").await;
    // The default deadline, 5 s.
    assert!(matches!(timed_out, Err(InvokeFailure::Timeout { .. })), "{timed_out:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(5), "failed after {took:?}, before the deadline");
    harness.inject("trap", None);
    assert_eq!(harness.call("trap", "GET", "/trap/ok", "").await.unwrap().status, 200);
}
