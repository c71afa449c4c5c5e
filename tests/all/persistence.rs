//! Data outlives the process.

use serde_json::json;

use crate::support::{Server, fresh_dir};

#[tokio::test]
async fn data_survives_a_restart() {
    let data = fresh_dir();
    let server = Server::start_with(None, data.clone()).await;
    let user = server.create_user("Hana", "hana@example.com").await;
    let order = server
        .post(
            "/orders",
            json!({"user_id": user, "items": [{"sku": "tea", "quantity": 1, "price": 450}]}),
        )
        .await
        .json();
    assert!(server.stop_with("TERM").await.success());

    let server = Server::start_with(None, data).await;
    let fetched = server.get(&format!("/users/{user}")).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json()["email"], "hana@example.com");
    let again = server.post("/users", json!({"name": "H", "email": "hana@example.com"})).await;
    assert_eq!(again.status, 409, "the email index survived too");
    let id = order["id"].as_str().unwrap();
    assert_eq!(server.get(&format!("/orders/{id}")).await.json(), order);
}

#[tokio::test]
async fn acknowledged_writes_survive_a_kill() {
    let data = fresh_dir();
    let server = Server::start_with(None, data.clone()).await;
    let user = server.create_user("Ivan", "ivan@example.com").await;
    // SIGKILL: no shutdown hook runs. A 201 must already have been durable.
    assert!(!server.stop_with("KILL").await.success());

    let server = Server::start_with(None, data).await;
    assert_eq!(server.get(&format!("/users/{user}")).await.status, 200);
}

#[tokio::test]
async fn a_second_host_on_the_same_data_dir_is_refused() {
    let data = fresh_dir();
    let _first = Server::start_with(None, data.clone()).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("opening storage"), "{stderr}");
}
