//! The order service keeps each order as its event history, and the version
//! before it (tests/components/order-v1) kept one record per order. A swap
//! to the older version and a rollback from it must lose no order and
//! settle none twice: both read and move the same orders.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, eventually, faulty_payment, fresh_dir, test_components};

fn order_of(user: &str, amount: i64) -> Value {
    json!({"user_id": user, "items": [{"sku": "thing", "quantity": 1, "price": amount}]})
}

async fn history(server: &Server, id: &str) -> Vec<Value> {
    let answer = server.get(&format!("/orders/{id}/events")).await;
    assert_eq!(answer.status, 200, "{id}: {}", String::from_utf8_lossy(&answer.body));
    answer.json()["events"].as_array().unwrap().clone()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn orders_cross_a_swap_to_the_version_before_histories_and_back() {
    // The saga tests' config: payment from a file (so that it can be
    // undeployed and deployed again), with a deadline under the order's.
    let server = Server::start_with(Some(&crate::saga::config()), fresh_dir()).await;
    let user = server.create_user("Vera", "vera@example.com").await;

    // Placed by the current version.
    let placed = server.post("/orders", order_of(&user, 1000)).await;
    assert_eq!(placed.status, 201);
    let first = placed.json();
    let first_id = first["id"].as_str().unwrap().to_string();

    // The older version serves now, and reads it as it was.
    let old = std::fs::read(test_components().join("order_v1.wasm")).unwrap();
    let swapped = server.admin("PUT", "/admin/components/order", old).await;
    assert_eq!(swapped.status, 200, "{}", String::from_utf8_lossy(&swapped.body));
    assert_eq!(server.get(&format!("/orders/{first_id}")).await.json(), first);
    let history_route = server.get(&format!("/orders/{first_id}/events")).await;
    assert_eq!(history_route.status, 404, "the older version has no history route");

    // With payment gone, the older version leaves an order PENDING, stored
    // its way only; its timeout is then the current version's to handle.
    let payment = std::fs::read(faulty_payment()).unwrap();
    assert_eq!(server.admin("DELETE", "/admin/components/payment", "").await.status, 200);
    let pending = server.post("/orders", order_of(&user, 2000)).await;
    assert_eq!(pending.status, 202, "{}", String::from_utf8_lossy(&pending.body));
    let pending_id = pending.json()["id"].as_str().unwrap().to_string();

    // Back to the current version: both orders are there.
    let back = server.admin("POST", "/admin/components/order/rollback", "").await;
    assert_eq!(back.status, 200, "{}", String::from_utf8_lossy(&back.body));
    assert_eq!(server.get(&format!("/orders/{first_id}")).await.json(), first);
    assert_eq!(
        types(&history(&server, &first_id).await),
        ["created", "payment-requested", "confirmed"]
    );
    let implied = history(&server, &pending_id).await;
    assert_eq!(types(&implied), ["created"], "implied by the older version's record");
    assert_eq!(implied[0]["at"], 0);
    assert_eq!(server.get(&format!("/orders/{pending_id}")).await.json()["status"], "PENDING");

    // Payment back: the saga timeout the older version scheduled settles
    // the order under the current one, once.
    assert_eq!(server.admin("PUT", "/admin/components/payment", payment).await.status, 200);
    let settled =
        eventually("the older version's order to settle", Duration::from_secs(30), || {
            let (server, id) = (&server, &pending_id);
            async move {
                let order = server.get(&format!("/orders/{id}")).await.json();
                (order["status"] != "PENDING").then_some(order)
            }
        })
        .await;
    assert_eq!(settled["status"], "CONFIRMED", "{settled}");
    let events = history(&server, &pending_id).await;
    assert_eq!(types(&events), ["created", "payment-requested", "confirmed"]);
    assert_eq!(events[2]["payment_id"], settled["payment_id"]);
    let payments = server.get(&format!("/payments?user_id={user}")).await.json();
    let for_order: Vec<&Value> = payments["payments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["order_id"] == pending_id.as_str())
        .collect();
    assert_eq!(for_order.len(), 1, "one payment: {payments}");
    assert_eq!(for_order[0]["status"], "COMPLETED");

    let listed = server.get(&format!("/orders?user_id={user}")).await.json();
    assert_eq!(listed["orders"].as_array().unwrap().len(), 2, "{listed}");
}
