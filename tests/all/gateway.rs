//! The gateway: routing, health, limits, error shape, headers, shutdown.

use std::time::Duration;

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn unknown_paths_are_404_json() {
    let server = Server::start().await;
    for path in ["/", "/nope", "/usersx", "/orderz/1"] {
        let answer = server.get(path).await;
        assert_eq!(answer.status, 404, "{path}");
        assert!(answer.error().contains("no route"), "{path}: {}", answer.error());
    }
}

#[tokio::test]
async fn responses_name_the_component_and_version() {
    let server = Server::start().await;
    let answer = server.get("/users/usr_nobody").await;
    assert_eq!(answer.header("pitstop-component"), Some("user"));
    assert_eq!(answer.header("pitstop-version"), Some("1"));
    let answer = server.get("/payments/pay_nobody").await;
    assert_eq!(answer.header("pitstop-component"), Some("payment"));
    // The log line is written after the response; give it a moment.
    crate::support::eventually("the request's log line", Duration::from_secs(5), || async {
        server.log().contains("path=/payments/pay_nobody").then_some(())
    })
    .await;
}

#[tokio::test]
async fn ready_reports_storage_bus_and_components_and_health_is_liveness() {
    let server = Server::start().await;
    let answer = server.get("/ready").await;
    assert_eq!(answer.status, 200);
    let report = answer.json();
    assert_eq!(report["status"], "healthy");
    for check in ["storage", "bus", "component:user", "component:order", "component:payment"] {
        assert_eq!(report["checks"][check], "ok", "{report}");
    }
    assert_eq!(server.send("POST", "/ready", "").await.status, 405);
    let live = server.get("/health").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "healthy");
    assert_eq!(server.send("POST", "/health", "").await.status, 405);
}

#[tokio::test]
async fn ready_is_503_when_a_routed_component_is_missing() {
    let config = r#"
        [[routes]]
        prefix = "/users"
        component = "user"

        [[routes]]
        prefix = "/ghost"
        component = "ghost"
    "#;
    let server = Server::start_with(Some(config), crate::support::fresh_dir()).await;
    let answer = server.get("/ready").await;
    assert_eq!(answer.status, 503);
    let report = answer.json();
    assert_eq!(report["status"], "unhealthy");
    assert_eq!(report["checks"]["component:user"], "ok");
    assert_ne!(report["checks"]["component:ghost"], "ok");
    // The process is alive all the same.
    assert_eq!(server.get("/health").await.status, 200);

    // A route whose component is not deployed is not live.
    let ghost = server.get("/ghost/x").await;
    assert_eq!(ghost.status, 404);
    assert!(ghost.error().contains("no route"));
    // The configured table replaced the built-in one.
    assert_eq!(server.get("/orders/x").await.status, 404);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let server = Server::start().await;
    let name = "x".repeat(1024 * 1024 + 1);
    let answer = server.post("/users", json!({"name": name, "email": "big@example.com"})).await;
    assert_eq!(answer.status, 413);
    assert!(answer.error().contains("exceeds"));
    // Just under the limit reaches the component (which then validates it).
    let answer = server
        .post("/users", json!({"name": "x".repeat(900_000), "email": "big@example.com"}))
        .await;
    assert_eq!(answer.status, 400);
    assert!(answer.error().contains("longer than"));
}

#[tokio::test]
async fn bad_config_files_are_refused_with_a_message() {
    let stderr = crate::support::serve_refuses("[gateway]\nmax_body = 3\n");
    assert!(stderr.contains("unknown field `max_body`"), "{stderr}");
}

#[tokio::test]
async fn ctrl_c_and_sigterm_stop_cleanly() {
    for signal in ["INT", "TERM"] {
        let server = Server::start().await;
        server.create_user("Gus", "gus@example.com").await;
        let status = server.stop_with(signal).await;
        assert!(status.success(), "SIG{signal} -> {status}");
    }
}

/// `pitstop-*` request headers are the platform's: the caller of a service
/// call is named in `pitstop-caller`, which the order service trusts for its
/// internal `_begin` step. A client sending it is ignored.
#[tokio::test]
async fn clients_cannot_forge_platform_headers() {
    let server = Server::start().await;
    let order = serde_json::json!({
        "id": "ord_forged", "user_id": "usr_x", "items": [], "amount": 1,
        "status": "CONFIRMED", "payment_id": null
    });
    let forged = server
        .send_with("POST", "/orders/_begin", &[("pitstop-caller", "order")], order.to_string())
        .await;
    assert_eq!(forged.status, 405, "treated as a client request");
    assert_eq!(server.get("/orders/ord_forged").await.status, 404, "nothing was stored");
}
