//! Circuit breakers over real HTTP: what opens one (5xx answers, deadlines,
//! failures in a row or a failure ratio), what it refuses while open, how
//! it closes, and that a swap or a rollback starts with a fresh one.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::resilience::config;
use crate::support::{Server, eventually, fresh_dir, test_components};

fn breaker_state(listing: &serde_json::Value, name: &str) -> String {
    let component = listing.as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
    component["breaker"]["state"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_failing_component_trips_its_breaker_and_recovers() {
    let breaker = "breaker = { consecutive_failures = 3, open_ms = 1000 }";
    let server = Server::start_with(Some(&config(breaker)), fresh_dir()).await;
    for _ in 0..3 {
        assert_eq!(server.get("/trap/panic").await.status, 500);
    }
    let listing = server.admin("GET", "/admin/components", "").await.json();
    assert_eq!(breaker_state(&listing, "trap"), "open");
    assert_eq!(breaker_state(&listing, "user"), "closed", "one breaker per component");

    // Open: refused at once, without calling the guest (which would sleep
    // for most of its deadline).
    let started = Instant::now();
    let refused = server.get("/trap/sleep/900").await;
    assert_eq!(refused.status, 503);
    assert!(started.elapsed() < Duration::from_millis(600), "the guest was not called");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.error().contains("circuit open"), "{}", refused.error());
    server.create_user("Quinn", "quinn@example.com").await;

    // After the open period one probe goes through; its success closes it.
    // (Refusals while it is still open do not count.)
    eventually("the breaker lets a probe through", Duration::from_secs(10), || async {
        (server.get("/trap/ok").await.status == 200).then_some(())
    })
    .await;
    let listing = server.admin("GET", "/admin/components", "").await.json();
    assert_eq!(breaker_state(&listing, "trap"), "closed");

    // A swap starts with a fresh breaker.
    for _ in 0..3 {
        assert_eq!(server.get("/trap/panic").await.status, 500);
    }
    assert_eq!(server.get("/trap/ok").await.status, 503);
    let bytes = std::fs::read(test_components().join("trap.wasm")).unwrap();
    let rebuilt = crate::support::rebuilt(&bytes, 1);
    assert_eq!(server.admin("PUT", "/admin/components/trap", rebuilt).await.status, 200);
    assert_eq!(server.get("/trap/ok").await.status, 200);

    // And so does a rollback: the open breaker stays with the version
    // rolled away from.
    for _ in 0..3 {
        assert_eq!(server.get("/trap/panic").await.status, 500);
    }
    assert_eq!(server.get("/trap/ok").await.status, 503);
    assert_eq!(server.admin("POST", "/admin/components/trap/rollback", "").await.status, 200);
    let after = server.get("/trap/ok").await;
    assert_eq!((after.status, after.header("pitstop-version")), (200, Some("1")));
}

#[tokio::test]
async fn service_callers_see_an_open_circuit_as_unavailable() {
    // The trap component stands in for user, so user can be made to fail.
    let trap = test_components().join("trap.wasm");
    let config = format!(
        r#"
        [components.user]
        path = "{}"
        breaker = {{ consecutive_failures = 2, open_ms = 60000 }}
        [[routes]]
        prefix = "/trap"
        component = "user"
        [[routes]]
        prefix = "/orders"
        component = "order"
        "#,
        trap.display()
    );
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    for _ in 0..2 {
        assert_eq!(server.get("/trap/panic").await.status, 500);
    }
    let order = server
        .post(
            "/orders",
            json!({"user_id": "usr_x", "items": [{"sku": "a", "quantity": 1, "price": 1}]}),
        )
        .await;
    assert_eq!(order.status, 503);
    assert!(order.error().contains("unavailable: circuit open"), "{}", order.error());
}

/// Failures in a row are not the only rule: once the window holds
/// `min_calls` calls, a failure share of `failure_ratio` opens it, even on a
/// success.
#[tokio::test]
async fn a_failure_ratio_opens_the_breaker_once_the_window_has_enough_calls() {
    let ratio = "breaker = { consecutive_failures = 100, failure_ratio = 0.5, min_calls = 10, \
                 window_ms = 60000, open_ms = 60000 }";
    let server = Server::start_with(Some(&config(ratio)), fresh_dir()).await;
    let state = || async {
        breaker_state(&server.admin("GET", "/admin/components", "").await.json(), "trap")
    };
    // 5 failures in 9 calls: over the ratio, under min_calls.
    for call in 1..=9 {
        let path = if call % 2 == 1 { "/trap/panic" } else { "/trap/ok" };
        server.get(path).await;
    }
    assert_eq!(state().await, "closed", "fewer calls than min_calls");
    // The tenth, a success, makes 5 of 10: the ratio is met.
    assert_eq!(server.get("/trap/ok").await.status, 200);
    assert_eq!(state().await, "open");
    let refused = server.get("/trap/ok").await;
    assert_eq!(refused.status, 503);
    assert!(refused.error().contains("circuit open"), "{}", refused.error());
}

/// What counts as a failure: a 5xx answer and a deadline do; a 4xx answer
/// is the client's, and does not.
#[tokio::test]
async fn server_errors_and_deadlines_count_and_client_errors_do_not() {
    let breaker = "breaker = { consecutive_failures = 2, open_ms = 60000 }";
    let server = Server::start_with(Some(&config(breaker)), fresh_dir()).await;
    for _ in 0..5 {
        assert_eq!(server.get("/trap/status/404").await.status, 404);
    }
    assert_eq!(server.get("/trap/ok").await.status, 200, "4xx answers do not count");
    for _ in 0..2 {
        assert_eq!(server.get("/trap/status/500").await.status, 500);
    }
    assert_eq!(server.get("/trap/ok").await.status, 503, "two 500 answers in a row open it");

    let server = Server::start_with(Some(&config(breaker)), fresh_dir()).await;
    for _ in 0..2 {
        assert_eq!(server.get("/trap/loop").await.status, 504);
    }
    assert_eq!(server.get("/trap/ok").await.status, 503, "two deadlines in a row open it");
}

/// An open breaker refuses every request, and a flood of them must not
/// flood the log: the refusals are logged once, with their count, when the
/// breaker leaves the open state (here, when its open period is over and a
/// probe goes through), and stay counted in the metrics.
#[tokio::test]
async fn an_open_breaker_logs_its_refusals_once_with_their_count() {
    let breaker = "breaker = { consecutive_failures = 3, open_ms = 1500 }";
    let server = Server::start_with(Some(&config(breaker)), fresh_dir()).await;
    for _ in 0..3 {
        assert_eq!(server.get("/trap/panic").await.status, 500);
    }
    let opened = Instant::now();
    for _ in 0..200 {
        let refused = server.get("/trap/ok").await;
        assert_eq!(refused.status, 503, "refused while open");
    }
    assert!(opened.elapsed() < Duration::from_millis(1500), "all 200 refused while open");
    eventually("the breaker lets a probe through", Duration::from_secs(10), || async {
        (server.get("/trap/ok").await.status == 200).then_some(())
    })
    .await;
    // The log reaches its file through a pipe: wait for the closing line.
    eventually("the breaker's closing is logged", Duration::from_secs(5), || async {
        server.log().contains("to=Closed").then_some(())
    })
    .await;
    let log = server.log();
    let about_refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("circuit open") || line.contains("refused"))
        .collect();
    assert!(about_refusals.len() <= 2, "{} lines about refusals:\n{}", about_refusals.len(), {
        about_refusals.iter().take(5).copied().collect::<Vec<_>>().join("\n")
    });
    // The probes that found it still open (eventually's polling) are
    // refusals too: 200 or a few more, counted in one line.
    let counted: Vec<&str> =
        about_refusals.iter().copied().filter(|l| l.contains("requests while open")).collect();
    assert_eq!(counted.len(), 1, "{about_refusals:?}");
    let count: u64 = counted[0]
        .split("refused ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {:?}", counted[0]));
    let refused_503 = server
        .metric(r#"pitstop_requests_total{component="trap",route="/trap",status="503"}"#)
        .await;
    assert!(count >= 200, "{}", counted[0]);
    assert_eq!(count as f64, refused_503, "the line counts every refusal the metrics count");
}

/// A client that sends its body slowly spends the request's deadline (it
/// counts from the request head): the 504 it gets is its own doing, and
/// counts neither toward the breaker nor as a failure of the version, or
/// any client could open a breaker (and switch a component off for
/// everyone) with a few slow uploads.
#[tokio::test]
async fn a_deadline_spent_by_the_clients_slow_upload_does_not_count() {
    let breaker = "breaker = { consecutive_failures = 2, open_ms = 60000 }";
    let server = Server::start_with(Some(&config(breaker)), fresh_dir()).await;
    // An answer that takes the guest 100 ms, and a body that comes after
    // 950 ms of the 1 s deadline.
    let slow =
        || crate::support::slow_upload(&server.base, "/trap/sleep/100", Duration::from_millis(950));
    for _ in 0..2 {
        let statuses = futures::future::join_all((0..2).map(|_| slow())).await;
        for status in statuses {
            assert!(status.contains(" 504 "), "{status}");
        }
    }
    assert_eq!(server.get("/trap/ok").await.status, 200, "the breaker stayed closed");
    let errors = r#"pitstop_version_requests_total{component="trap",version="1",outcome="error"}"#;
    assert_eq!(server.metric(errors).await, 0.0, "not the version's failures");
}
