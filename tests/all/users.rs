//! The user service's HTTP contract.

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn register_then_fetch() {
    let server = Server::start().await;
    let created =
        server.post("/users", json!({"name": "Alice", "email": "alice@example.com"})).await;
    assert_eq!(created.status, 201);
    let user = created.json();
    let id = user["id"].as_str().unwrap();
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{id}"
    );
    assert_eq!(user["name"], "Alice");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(created.header("content-type"), Some("application/json"));

    let fetched = server.get(&format!("/users/{id}")).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json(), user);

    let second = server.create_user("Bob", "bob@example.com").await;
    assert_ne!(second, id, "ids are unique");
}

#[tokio::test]
async fn invalid_registrations_are_400() {
    let server = Server::start().await;
    let cases = [
        json!({"email": "a@example.com"}),
        json!({"name": "", "email": "a@example.com"}),
        json!({"name": "   ", "email": "a@example.com"}),
        json!({"name": "A"}),
        json!({"name": "A", "email": "not-an-email"}),
        json!({"name": "A", "email": "a@nodot"}),
        json!({"name": "A", "email": "@example.com"}),
        json!({"name": "A", "email": "a b@example.com"}),
        json!({"name": "A", "email": "a@@example.com"}),
        json!({"name": 5, "email": "a@example.com"}),
        json!([1, 2]),
    ];
    for body in cases {
        let answer = server.post("/users", body.clone()).await;
        assert_eq!(answer.status, 400, "{body} -> {}", String::from_utf8_lossy(&answer.body));
        assert!(!answer.error().is_empty());
    }
    let malformed = server.send("POST", "/users", "{\"name\": \"A\", ").await;
    assert_eq!(malformed.status, 400);
    assert!(malformed.error().contains("malformed JSON"), "{}", malformed.error());
    // Nothing was registered along the way.
    assert_eq!(
        server.post("/users", json!({"name": "A", "email": "a@example.com"})).await.status,
        201
    );
}

#[tokio::test]
async fn an_email_registers_once() {
    let server = Server::start().await;
    server.create_user("Carol", "carol@example.com").await;
    let again = server.post("/users", json!({"name": "Other", "email": "carol@example.com"})).await;
    assert_eq!(again.status, 409);
    assert!(again.error().contains("already registered"));
    let shouting =
        server.post("/users", json!({"name": "Other", "email": "CAROL@Example.com"})).await;
    assert_eq!(shouting.status, 409, "emails compare case-insensitively");
}

#[tokio::test]
async fn unknown_users_methods_and_paths() {
    let server = Server::start().await;
    let missing = server.get("/users/usr_doesnotexist").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error(), "user not found");
    assert_eq!(server.send("DELETE", "/users", "").await.status, 405);
    assert_eq!(server.send("PUT", "/users/usr_x", "{}").await.status, 405);
    assert_eq!(server.get("/users").await.status, 405);
    let deeper = server.get("/users/usr_x/friends").await;
    assert_eq!(deeper.status, 404);
    assert!(!deeper.error().is_empty());
}
