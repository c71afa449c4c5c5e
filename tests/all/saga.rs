//! The order saga with faults injected: every order ends `CONFIRMED` with
//! exactly one `COMPLETED` payment, or `FAILED` with no payment or a
//! `DECLINED` or `REFUNDED` one, whatever payment does, and across a kill.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, eventually, faulty_payment, fresh_dir};

/// Longer than the order service's saga timeout (8 s) plus retries.
const SETTLE: Duration = Duration::from_secs(30);

/// The built-ins, with payment replaced by its fault-injecting build and
/// given a deadline well under the order's, as the order README advises.
pub(crate) fn config() -> String {
    format!(
        r#"
        [components.payment]
        path = "{payment}"
        deadline_ms = 1000

        [components.order]
        deadline_ms = 5000

        [bus]
        backoff_base_ms = 100
        "#,
        payment = faulty_payment().display(),
    )
}

fn order_of(amount: i64) -> Value {
    json!([{ "sku": "thing", "quantity": 1, "price": amount }])
}

async fn place(server: &Server, user: &str, amount: i64) -> u16 {
    server.post("/orders", json!({ "user_id": user, "items": order_of(amount) })).await.status
}

/// Wait until none of `user`'s orders is PENDING; returns them all.
pub(crate) async fn settled_orders(server: &Server, user: &str) -> Vec<Value> {
    eventually("every order to leave PENDING", SETTLE, || async {
        let answer = server.get(&format!("/orders?user_id={user}")).await;
        assert_eq!(answer.status, 200);
        let orders = answer.json()["orders"].as_array().unwrap().clone();
        orders.iter().all(|o| o["status"] != "PENDING").then_some(orders)
    })
    .await
}

/// Check every order against every payment of `user`.
pub(crate) async fn reconcile(
    server: &Server,
    user: &str,
    orders: &[Value],
) -> HashMap<String, usize> {
    let answer = server.get(&format!("/payments?user_id={user}")).await;
    assert_eq!(answer.status, 200);
    let payments = answer.json()["payments"].as_array().unwrap().clone();
    let mut by_order: HashMap<&str, Vec<&Value>> = HashMap::new();
    for payment in &payments {
        by_order.entry(payment["order_id"].as_str().unwrap()).or_default().push(payment);
    }
    let order_ids: Vec<&str> = orders.iter().map(|o| o["id"].as_str().unwrap()).collect();
    for order_id in by_order.keys() {
        assert!(order_ids.contains(order_id), "payment for an unknown order {order_id}");
    }
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for order in orders {
        let id = order["id"].as_str().unwrap();
        history_of(server, order).await;
        let paid = by_order.get(id).cloned().unwrap_or_default();
        assert!(paid.len() <= 1, "order {id} has {} payments", paid.len());
        let payment_status = paid.first().map(|p| p["status"].as_str().unwrap());
        let outcome = match (order["status"].as_str().unwrap(), payment_status) {
            ("CONFIRMED", Some("COMPLETED")) => {
                assert_eq!(order["payment_id"], paid[0]["id"], "{order}");
                "confirmed"
            }
            ("FAILED", None) => "failed, no payment",
            ("FAILED", Some("DECLINED")) => "failed, declined",
            ("FAILED", Some("REFUNDED")) => "failed, refunded",
            (status, payment) => panic!("order {order} is {status} with payment {payment:?}"),
        };
        *outcomes.entry(outcome.to_string()).or_default() += 1;
    }
    outcomes
}

/// The types of `order`'s event history, checked against the order: `seq`
/// runs 1, 2, ... with no gap, `created` comes first and once, exactly one
/// outcome ends a settled order and is its status, with the order's
/// payment and reason, and a compensation comes right before a failure.
async fn history_of(server: &Server, order: &Value) -> Vec<String> {
    let id = order["id"].as_str().unwrap();
    let answer = server.get(&format!("/orders/{id}/events")).await;
    assert_eq!(answer.status, 200, "{order}");
    let events = answer.json()["events"].as_array().unwrap().clone();
    let types: Vec<String> = events.iter().map(|e| e["type"].as_str().unwrap().into()).collect();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], i + 1, "{id}: {types:?}");
        assert_eq!(event["id"], id);
    }
    assert_eq!(types.iter().filter(|t| *t == "created").count(), 1, "{id}: {types:?}");
    assert_eq!(types[0], "created", "{id}: {types:?}");
    let outcomes: Vec<&Value> =
        events.iter().filter(|e| e["type"] == "confirmed" || e["type"] == "failed").collect();
    match order["status"].as_str().unwrap() {
        "PENDING" => assert!(outcomes.is_empty(), "{id}: {types:?}"),
        status => {
            assert_eq!(outcomes.len(), 1, "{id}: one outcome, {types:?}");
            let outcome = outcomes[0];
            assert_eq!(outcome, events.last().unwrap(), "{id}: the outcome is last");
            assert_eq!(outcome["status"], status, "{id}");
            assert_eq!(outcome["payment_id"], order["payment_id"], "{id}");
            assert_eq!(outcome["failure_reason"], order["failure_reason"], "{id}");
        }
    }
    for (i, kind) in types.iter().enumerate() {
        if kind == "compensated" {
            assert_eq!(types.get(i + 1).map(String::as_str), Some("failed"), "{id}: {types:?}");
        }
    }
    types
}

#[tokio::test]
async fn the_saga_holds_when_payment_declines_traps_hangs_or_goes_away() {
    let server = Server::start_with(Some(&config()), fresh_dir()).await;
    let user = server.create_user("Saga", "saga@example.com").await;
    // Amounts in cents: ...13 traps, ...14 hangs past the deadline, ...15 is
    // slow, over 100000 is declined, the rest complete.
    let amounts = [1000, 200_000, 1013, 1014, 1015, 2000, 300_000, 2013, 2015, 3000];
    let mut statuses = Vec::new();
    for amount in amounts {
        statuses.push((amount, place(&server, &user, amount).await));
    }
    for (amount, status) in &statuses {
        assert!(matches!(status, 201 | 202), "amount {amount}: {status}");
    }

    // Payment undeployed while an order's charge runs in it (each takes
    // 300 ms there), and back once another order was placed and answered
    // while it was away: orders caught in between still settle.
    let wasm = std::fs::read(faulty_payment()).unwrap();
    let answered = AtomicUsize::new(0);
    let back = AtomicBool::new(false);
    let in_flight = async {
        let mut statuses = Vec::new();
        while statuses.len() < 6 || !back.load(Ordering::SeqCst) {
            statuses.push(place(&server, &user, 4015).await);
            answered.fetch_add(1, Ordering::SeqCst);
        }
        statuses
    };
    let outage = async {
        server.wait_in_flight("payment", 1.0).await;
        assert_eq!(server.admin("DELETE", "/admin/components/payment", "").await.status, 200);
        let at_undeploy = answered.load(Ordering::SeqCst);
        // The order in flight at the undeploy, then one begun after it.
        eventually("an order placed while payment was away", SETTLE, || {
            let done = answered.load(Ordering::SeqCst) >= at_undeploy + 2;
            async move { done.then_some(()) }
        })
        .await;
        assert_eq!(server.admin("PUT", "/admin/components/payment", wasm).await.status, 200);
        back.store(true, Ordering::SeqCst);
    };
    let (during, ()) = tokio::join!(in_flight, outage);
    for status in &during {
        assert!(matches!(status, 201 | 202), "during the outage: {status}");
    }

    let orders = settled_orders(&server, &user).await;
    assert_eq!(orders.len(), amounts.len() + during.len());
    let outcomes = reconcile(&server, &user, &orders).await;
    assert!(outcomes.get("confirmed").copied().unwrap_or(0) >= 5, "{outcomes:?}");
    assert_eq!(outcomes.get("failed, declined"), Some(&2), "{outcomes:?}");
    assert!(outcomes.get("failed, no payment").copied().unwrap_or(0) >= 3, "{outcomes:?}");

    // Each amount ends as its fault says, and the failed ones say why.
    // (amount, status, words of failure_reason)
    let expected: &[(i64, &str, &str)] = &[
        (1000, "CONFIRMED", ""),
        (2000, "CONFIRMED", ""),
        (3000, "CONFIRMED", ""),
        (1015, "CONFIRMED", ""),
        (2015, "CONFIRMED", ""),
        (200_000, "FAILED", "payment declined"),
        (300_000, "FAILED", "payment declined"),
        (1013, "FAILED", "trapped"),
        (2013, "FAILED", "trapped"),
        (1014, "FAILED", "payment service cannot answer"),
    ];
    for &(amount, status, reason) in expected {
        let order = orders
            .iter()
            .find(|o| o["amount"] == amount)
            .unwrap_or_else(|| panic!("no order of {amount}"));
        assert_eq!(order["status"], status, "amount {amount}: {order}");
        match order["failure_reason"].as_str() {
            Some(why) => assert!(!reason.is_empty() && why.contains(reason), "{amount}: {order}"),
            None => assert!(reason.is_empty(), "amount {amount} failed without a reason: {order}"),
        }
    }
    // Each path through the saga left its facts, once each.
    let paths: &[(i64, &[&str])] = &[
        (1000, &["created", "payment-requested", "confirmed"]),
        (200_000, &["created", "payment-requested", "failed"]),
        (1013, &["created", "payment-requested", "compensated", "failed"]),
        (1014, &["created", "payment-requested", "compensated", "failed"]),
    ];
    for &(amount, path) in paths {
        let order = orders.iter().find(|o| o["amount"] == amount).unwrap();
        assert_eq!(history_of(&server, order).await, path, "amount {amount}");
    }
    // The events reached nobody twice: a second look finds the same picture.
    for order in &orders {
        if order["status"] == "FAILED" {
            assert!(order["failure_reason"].is_string(), "{order}");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = reconcile(&server, &user, &settled_orders(&server, &user).await).await;
    assert_eq!(again, outcomes);
}

/// Orders cut mid-saga by a `kill -9` are still `PENDING` when the host is
/// back, and then settle: the saga timeout resumes them (a charge that
/// completes) or compensates them (a charge that hangs again).
#[tokio::test]
async fn a_saga_cut_by_a_kill_resumes_or_compensates_after_restart() {
    let data = fresh_dir();
    // A hanging charge keeps its order PENDING for payment's whole
    // deadline: 3 s here, a wide window for the kill (still well under the
    // order's 5 s, so without a kill it would be compensated in-request).
    let config = config().replace("deadline_ms = 1000", "deadline_ms = 3000");
    let server = Server::start_with(Some(&config), data.clone()).await;
    let user = server.create_user("Crash", "crash@example.com").await;
    let client = raw_client::Client::new(server.base.clone(), server.token.clone().unwrap());
    // Slow payments (300 ms each), four at a time, and one that hangs.
    let hanging = 6014;
    let mut placing = Vec::new();
    for amount in [5015, 5115, 5215, 5315, hanging] {
        let client = client.clone();
        let user = user.clone();
        placing.push(tokio::spawn(async move {
            let rounds = if amount == hanging { 1 } else { 5 };
            for _ in 0..rounds {
                let body = json!({"user_id": user, "items": order_of(amount)});
                if client.post("/orders", body).await.is_none() {
                    return;
                }
            }
        }));
    }
    // The kill comes while the hanging order waits on its charge, and once
    // slow orders are under way too (on a loaded machine the hanging one
    // can be the first to begin).
    let (cut, slow) = eventually(
        "the hanging order PENDING beside slow ones",
        Duration::from_secs(30),
        || async {
            let answer = server.get(&format!("/orders?user_id={user}")).await;
            let orders = answer.json()["orders"].as_array().unwrap().clone();
            let order = orders.iter().find(|o| o["amount"] == hanging)?;
            assert_eq!(order["status"], "PENDING", "settled before the kill: {order}");
            let slow: Vec<String> = orders
                .iter()
                .filter(|o| o["amount"] != hanging)
                .map(|o| o["id"].as_str().unwrap().to_string())
                .collect();
            (!slow.is_empty()).then(|| (order["id"].as_str().unwrap().to_string(), slow))
        },
    )
    .await;
    assert!(!server.stop_with("KILL").await.success());
    for task in placing {
        let _ = task.await;
    }

    let server = Server::start_with(Some(&config), data).await;
    // Back before its timeout (8 s after the order began) resumes it: the
    // saga was cut, not finished, so this is what the restart has to settle.
    let answer = server.get(&format!("/orders/{cut}")).await;
    assert_eq!(answer.status, 200);
    let order = answer.json();
    assert_eq!(order["status"], "PENDING", "right after the restart: {order}");

    let orders = settled_orders(&server, &user).await;
    let outcomes = reconcile(&server, &user, &orders).await;
    assert!(outcomes.get("confirmed").copied().unwrap_or(0) >= 1, "{outcomes:?}");
    // Every slow order begun before the kill ends confirmed: those the kill
    // cut were resumed, and their charge completed.
    for id in &slow {
        let order = orders.iter().find(|o| o["id"] == id.as_str()).unwrap();
        assert_eq!(order["status"], "CONFIRMED", "{order}");
    }
    let order = orders.iter().find(|o| o["id"] == cut.as_str()).unwrap();
    // Resumed, its charge hung again: compensated, with no payment made.
    assert_eq!(order["status"], "FAILED", "{order}");
    let reason = order["failure_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("payment service cannot answer"), "{order}");
    // Its history holds what committed: the cut request recorded nothing,
    // the timeout's charge and compensation are there once each.
    let types = history_of(&server, order).await;
    assert_eq!(types, ["created", "payment-requested", "compensated", "failed"]);
}

/// A bare HTTP client for requests that may never be answered (the server
/// is killed under them).
mod raw_client {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client as Hyper;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    #[derive(Clone)]
    pub struct Client {
        base: String,
        token: String,
        hyper: Hyper<HttpConnector, Full<Bytes>>,
    }

    impl Client {
        pub fn new(base: String, token: String) -> Self {
            Client { base, token, hyper: Hyper::builder(TokioExecutor::new()).build_http() }
        }

        /// The status, or `None` if the connection failed.
        pub async fn post(&self, path: &str, body: serde_json::Value) -> Option<u16> {
            let request = http::Request::post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", self.token))
                .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
                .unwrap();
            self.hyper.request(request).await.ok().map(|r| r.status().as_u16())
        }
    }
}

#[tokio::test]
async fn orders_fall_back_to_the_read_model_when_the_user_service_is_gone() {
    let server = Server::start().await;
    let user = server.create_user("Reader", "reader@example.com").await;
    // Wait until user.created reached the order service: then an order for
    // the user goes through with the user service undeployed.
    assert_eq!(server.admin("DELETE", "/admin/components/user", "").await.status, 200);
    let placed = eventually("an order placed from the read model", Duration::from_secs(10), || {
        let server = &server;
        let user = &user;
        async move {
            let answer =
                server.post("/orders", json!({ "user_id": user, "items": order_of(500) })).await;
            (answer.status == 201).then_some(answer)
        }
    })
    .await;
    assert_eq!(placed.json()["status"], "CONFIRMED");
    let unknown =
        server.post("/orders", json!({ "user_id": "usr_nobody", "items": order_of(500) })).await;
    assert_eq!(unknown.status, 503, "{}", String::from_utf8_lossy(&unknown.body));
    assert!(unknown.error().contains("user service cannot answer"), "{}", unknown.error());
}
