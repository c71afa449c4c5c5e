//! The order service's HTTP contract, and its calls to user and payment.

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn an_order_is_confirmed_and_paid() {
    let server = Server::start().await;
    let user = server.create_user("Dana", "dana@example.com").await;
    let items = json!([{"sku": "book", "quantity": 2, "price": 1250}, {"sku": "pen", "quantity": 3, "price": 99}]);
    let placed = server.post("/orders", json!({"user_id": user, "items": items})).await;
    assert_eq!(placed.status, 201, "{}", String::from_utf8_lossy(&placed.body));
    let order = placed.json();
    assert_eq!(order["status"], "CONFIRMED");
    assert_eq!(order["amount"], 2 * 1250 + 3 * 99);
    assert_eq!(order["user_id"], user.as_str());
    assert_eq!(order["items"], items);
    let id = order["id"].as_str().unwrap();
    assert!(id.starts_with("ord_"));

    let payment_id = order["payment_id"].as_str().expect("a confirmed order has a payment");
    let payment = server.get(&format!("/payments/{payment_id}")).await.json();
    assert_eq!(payment["status"], "COMPLETED");
    assert_eq!(payment["order_id"], id);
    assert_eq!(payment["amount"], order["amount"]);

    let fetched = server.get(&format!("/orders/{id}")).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json(), order);

    // The order is its history: placed, paid for, confirmed.
    let history = server.get(&format!("/orders/{id}/events")).await;
    assert_eq!(history.status, 200);
    let history = history.json();
    assert_eq!(history["id"], id);
    let events = history["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["created", "payment-requested", "confirmed"]);
    assert_eq!(events[0]["items"], items);
    assert_eq!(events[1]["amount"], order["amount"]);
    assert_eq!(events[2]["payment_id"], payment_id);
}

#[tokio::test]
async fn a_declined_payment_fails_the_order() {
    let server = Server::start().await;
    let user = server.create_user("Eve", "eve@example.com").await;
    let placed = server
        .post(
            "/orders",
            json!({"user_id": user, "items": [{"sku": "car", "quantity": 1, "price": 100_001}]}),
        )
        .await;
    assert_eq!(placed.status, 201);
    let order = placed.json();
    assert_eq!(order["status"], "FAILED");
    let payment_id = order["payment_id"].as_str().expect("the declined payment is recorded");
    assert_eq!(server.get(&format!("/payments/{payment_id}")).await.json()["status"], "DECLINED");
    let id = order["id"].as_str().unwrap();
    assert_eq!(server.get(&format!("/orders/{id}")).await.json()["status"], "FAILED");
}

#[tokio::test]
async fn unknown_users_are_422() {
    let server = Server::start().await;
    for user in ["usr_nobody", "../../etc", ""] {
        let answer = server
            .post(
                "/orders",
                json!({"user_id": user, "items": [{"sku": "a", "quantity": 1, "price": 1}]}),
            )
            .await;
        assert_eq!(answer.status, 422, "{user:?}: {}", String::from_utf8_lossy(&answer.body));
        assert!(answer.error().contains("does not exist"));
    }
}

#[tokio::test]
async fn invalid_orders_are_400() {
    let server = Server::start().await;
    let user = server.create_user("Finn", "finn@example.com").await;
    let cases = [
        json!({"user_id": user, "items": []}),
        json!({"user_id": user, "items": [{"sku": "a", "quantity": 0, "price": 1}]}),
        json!({"user_id": user, "items": [{"sku": "a", "quantity": 1, "price": 0}]}),
        json!({"user_id": user, "items": [{"sku": "a", "quantity": -1, "price": 5}]}),
        json!({"user_id": user, "items": [{"sku": "a", "quantity": 1, "price": -5}]}),
        json!({"user_id": user, "items": [{"sku": "", "quantity": 1, "price": 5}]}),
        json!({"user_id": user, "items": [{"sku": "a", "quantity": i64::MAX, "price": 2}]}),
        json!({"user_id": user}),
        json!({"items": [{"sku": "a", "quantity": 1, "price": 5}]}),
    ];
    for body in cases {
        let answer = server.post("/orders", body.clone()).await;
        assert_eq!(answer.status, 400, "{body} -> {}", String::from_utf8_lossy(&answer.body));
        assert!(!answer.error().is_empty());
    }
    assert_eq!(server.send("POST", "/orders", "{oops").await.status, 400);
    // Items too big for the order's history are refused before any charge.
    let big =
        json!({"user_id": user, "items": [{"sku": "x".repeat(70_000), "quantity": 1, "price": 1}]});
    let answer = server.post("/orders", big).await;
    assert_eq!(answer.status, 413, "{}", String::from_utf8_lossy(&answer.body));
    assert!(answer.error().contains("65536"), "{}", answer.error());
    let orders = server.get(&format!("/orders?user_id={user}")).await.json();
    assert_eq!(orders["orders"], json!([]), "nothing was recorded");
}

#[tokio::test]
async fn unknown_orders_methods_and_paths() {
    let server = Server::start().await;
    assert_eq!(server.get("/orders/ord_missing").await.status, 404);
    assert_eq!(server.get("/orders").await.status, 400, "listing needs ?user_id=");
    assert_eq!(server.send("PATCH", "/orders/ord_x", "{}").await.status, 405);
    assert_eq!(server.get("/orders/ord_x/items").await.status, 404);
    assert_eq!(server.get("/orders/ord_missing/events").await.status, 404);
    assert_eq!(server.send("DELETE", "/orders/ord_x/events", "").await.status, 405);
}

/// When payment answers nonsense, the order is FAILED with a reason and no
/// payment, and the client still learns the order's id and state.
#[tokio::test]
async fn an_order_whose_payment_cannot_be_made_fails_with_a_reason() {
    // The trap test component stands in for payment: it answers 404 to /payments.
    let trap = crate::support::test_components().join("trap.wasm");
    let config = format!("[components.payment]\npath = \"{}\"\n", trap.display());
    let server = Server::start_with(Some(&config), crate::support::fresh_dir()).await;
    let user = server.create_user("Gil", "gil@example.com").await;
    let placed = server
        .post(
            "/orders",
            json!({"user_id": user, "items": [{"sku": "a", "quantity": 1, "price": 10}]}),
        )
        .await;
    assert_eq!(placed.status, 201);
    let order = placed.json();
    assert_eq!(order["status"], "FAILED");
    assert_eq!(order["payment_id"], serde_json::Value::Null);
    assert!(order["failure_reason"].as_str().unwrap().contains("payment service answered 404"));
}
