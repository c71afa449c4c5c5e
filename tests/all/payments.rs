//! The payment service's HTTP contract, as the shop's admin uses it:
//! charges are the order service's and the admin's, refunds the admin's
//! (who may do what is in `ownership.rs`).

use serde_json::{Value, json};

use crate::support::Server;

/// The platform with three services, its requests made by an admin.
async fn as_admin() -> Server {
    let mut server = Server::start().await;
    server.token = Some(server.token_for("tester", &["admin"]));
    server
}

async fn pay(server: &Server, order: &str, amount: i64) -> (u16, Value) {
    let answer = server
        .post("/payments", json!({"order_id": order, "user_id": "usr_1", "amount": amount}))
        .await;
    (answer.status, answer.json())
}

#[tokio::test]
async fn charges_complete_up_to_the_limit_and_decline_above() {
    let server = as_admin().await;
    let (status, payment) = pay(&server, "ord_a", 2500).await;
    assert_eq!(status, 201);
    assert_eq!(payment["status"], "COMPLETED");
    assert_eq!(payment["amount"], 2500);
    assert_eq!(payment["order_id"], "ord_a");
    assert_eq!(payment["user_id"], "usr_1");
    assert!(payment["id"].as_str().unwrap().starts_with("pay_"));

    let (_, at_limit) = pay(&server, "ord_b", 100_000).await;
    assert_eq!(at_limit["status"], "COMPLETED");
    let (status, over) = pay(&server, "ord_c", 100_001).await;
    assert_eq!(status, 201);
    assert_eq!(over["status"], "DECLINED");

    let fetched = server.get(&format!("/payments/{}", payment["id"].as_str().unwrap())).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json(), payment);
    assert_eq!(server.get("/payments/pay_nope").await.status, 404);
}

#[tokio::test]
async fn invalid_charges_are_400() {
    let server = as_admin().await;
    for amount in [0, -1] {
        assert_eq!(pay(&server, "ord_x", amount).await.0, 400);
    }
    for body in [
        json!({"user_id": "u", "amount": 5}),
        json!({"order_id": "o", "amount": 5}),
        json!({"order_id": "o", "user_id": "u"}),
        json!({"order_id": "o", "user_id": "u", "amount": "5"}),
        json!({"order_id": "o", "user_id": "u", "amount": 1.5}),
        json!({"order_id": "", "user_id": "u", "amount": 5}),
    ] {
        let answer = server.post("/payments", body.clone()).await;
        assert_eq!(answer.status, 400, "{body}");
        assert!(!answer.error().is_empty());
    }
    assert_eq!(server.send("POST", "/payments", "nope").await.status, 400);
}

#[tokio::test]
async fn one_payment_per_order() {
    let server = as_admin().await;
    let (first_status, first) = pay(&server, "ord_same", 700).await;
    assert_eq!(first_status, 201);
    let (again_status, again) = pay(&server, "ord_same", 700).await;
    assert_eq!(again_status, 200, "a repeat is answered, not charged");
    assert_eq!(again, first);
    let (conflict, body) = pay(&server, "ord_same", 900).await;
    assert_eq!(conflict, 409, "{body}");

    // Concurrent repeats: still exactly one payment.
    let answers = futures_join(&server, "ord_race", 8).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    let ids: std::collections::HashSet<_> = answers.iter().map(|(_, p)| p["id"].clone()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
}

async fn futures_join(server: &Server, order: &str, n: usize) -> Vec<(u16, Value)> {
    futures::future::join_all((0..n).map(|_| pay(server, order, 300))).await
}

#[tokio::test]
async fn refunds() {
    let server = as_admin().await;
    let (_, payment) = pay(&server, "ord_r", 1000).await;
    let id = payment["id"].as_str().unwrap();
    let refunded = server.post(&format!("/payments/{id}/refund"), json!({})).await;
    assert_eq!(refunded.status, 200);
    assert_eq!(refunded.json()["status"], "REFUNDED");
    assert_eq!(server.get(&format!("/payments/{id}")).await.json()["status"], "REFUNDED");

    let twice = server.post(&format!("/payments/{id}/refund"), json!({})).await;
    assert_eq!(twice.status, 409);

    let (_, declined) = pay(&server, "ord_d", 200_000).await;
    let declined_refund = server
        .post(&format!("/payments/{}/refund", declined["id"].as_str().unwrap()), json!({}))
        .await;
    assert_eq!(declined_refund.status, 409);

    assert_eq!(server.post("/payments/pay_nope/refund", json!({})).await.status, 404);
    assert_eq!(server.get(&format!("/payments/{id}/refund")).await.status, 405);
    assert_eq!(server.send("DELETE", &format!("/payments/{id}"), "").await.status, 405);
    assert_eq!(server.get("/payments/a/b/c").await.status, 404);
}
