//! Opt-in instance reuse (`[components.NAME] reuse`): a warm instance serves
//! request after request, each with its own identity, and is discarded
//! after anything that may have left it broken; swaps and rollbacks under
//! load fail no request.

use std::sync::Arc;

use serde_json::Value;

use crate::resilience::config;
use crate::support::{Looping, Server, assert_no_failure_across, fresh_dir, test_components, text};

/// What `GET /trap/count` answered: requests served by that instance.
async fn served(server: &Server) -> u64 {
    let answer = server.get("/trap/count").await;
    assert_eq!(answer.status, 200, "{}", text(&answer.body));
    answer.json()["served"].as_u64().unwrap()
}

/// How many instances of the trap component were made.
const INSTANTIATIONS: &str = r#"pitstop_instantiation_duration_seconds_count{component="trap"}"#;

/// Reuse with one instance at a time, so a request finds the instance the
/// one before it left.
fn reusing(reuse: &str) -> String {
    config(&format!("max_parallel = 1\nreuse = {reuse}"))
}

/// By default every request has a fresh instance; with `reuse`, one
/// instance serves `max_requests` requests and is then replaced.
#[tokio::test]
async fn an_instance_serves_max_requests_then_a_fresh_one_follows() {
    let fresh = Server::start_with(Some(&config("")), fresh_dir()).await;
    for _ in 0..3 {
        assert_eq!(served(&fresh).await, 1, "a fresh instance per request by default");
    }
    let warm = Server::start_with(Some(&reusing("{ max_requests = 3 }")), fresh_dir()).await;
    let mut counts = Vec::new();
    for _ in 0..7 {
        counts.push(served(&warm).await);
    }
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1]);
}

/// The identity a request's calls carry is that request's own: a warm
/// instance that served one signed-in client relays another's identity for
/// the next, and none for an anonymous read.
#[tokio::test]
async fn each_request_on_a_warm_instance_carries_its_own_identity() {
    // Two idle instances kept: one for the relay, one for its call.
    let server =
        Server::start_with(Some(&config("max_parallel = 2\nreuse = {}")), fresh_dir()).await;
    let other = server.mint_token("other", "1h", None, &[]).expect("a token");
    let other = format!("Bearer {other}");
    for _ in 0..3 {
        // A write needs a token, so the gateway verifies it and names the subject.
        let tester = server.send("POST", "/trap/relay", "").await;
        assert_eq!(tester.status, 200, "{}", text(&tester.body));
        assert_eq!(tester.json()["subject"], "tester");
        let headers = [("authorization", other.as_str())];
        let second = server.send_with("POST", "/trap/relay", &headers, "").await;
        assert_eq!(second.status, 200, "{}", text(&second.body));
        assert_eq!(second.json()["subject"], "other", "the identity of the request before");
        let anonymous = server.send_raw("GET", "/trap/relay", &[], "").await;
        assert_eq!(anonymous.status, 200, "{}", text(&anonymous.body));
        assert_eq!(anonymous.json()["subject"], Value::Null, "an identity left over");
    }
    // 9 requests, each two invocations (the relay and its call).
    let made = server.metric(INSTANTIATIONS).await;
    assert_eq!(made, 2.0, "{made} instances for 18 invocations: reused");
}

/// A trap, a missed deadline, a 5xx answer and memory grown past the
/// threshold each retire the instance; a request that stays under it
/// does not.
#[tokio::test]
async fn an_instance_is_discarded_after_a_trap_a_deadline_a_5xx_or_growth() {
    let lenient = "breaker = { consecutive_failures = 1000, min_calls = 1000 }";
    let reuse = "{ max_requests = 100, max_memory = 8388608 }";
    let server = Server::start_with(
        Some(&config(&format!("{lenient}\nmax_parallel = 1\nreuse = {reuse}"))),
        fresh_dir(),
    )
    .await;
    let cases = [
        ("/trap/panic", 500),
        ("/trap/loop", 504),
        ("/trap/status/503", 503),
        // Past the 8 MiB threshold, within the 16 MiB limit.
        ("/trap/grow-by/10", 200),
    ];
    for (path, status) in cases {
        let before = served(&server).await;
        assert_eq!(served(&server).await, before + 1, "reused before {path}");
        assert_eq!(server.get(path).await.status, status, "{path}");
        assert_eq!(served(&server).await, 1, "{path} retired the instance");
    }
    assert_eq!(server.get("/trap/grow-by/1").await.status, 200);
    assert_eq!(served(&server).await, 2, "a little growth keeps the instance");
}

/// Clients looping on a reusing component while it is swapped to another
/// version and rolled back see no failed request, including the requests
/// on warm instances of the version being replaced when it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swaps_and_rollbacks_under_load_fail_no_request() {
    let config = config("reuse = {}").replace("deadline_ms = 1000", "deadline_ms = 3000");
    let server = Arc::new(Server::start_with(Some(&config), fresh_dir()).await);
    let trap = std::fs::read(test_components().join("trap.wasm")).unwrap();
    // Three clients' requests take 0.7 to 1.5 s, longer than a change
    // takes, and end at different times, so a change finds some running;
    // two clients' 10 ms, so the new version answers while they run.
    let slow = ["/trap/sleep/700", "/trap/sleep/1100", "/trap/sleep/1500"];
    let quick = "/trap/sleep/10";
    let load = Looping::start(&server, &[slow[0], slow[1], slow[2], quick, quick], 5);
    let changes = load.swap_and_roll_back(&server, "trap", 1, &trap, 3).await;
    assert_no_failure_across(&load.stop().await, &changes);
}

/// A `wasi:http` component reuses its instances too, and each request gets
/// a response of its own (the incoming request and its response-outparam
/// are per request).
#[tokio::test]
async fn a_wasi_http_component_serves_from_warm_instances() {
    let config = crate::support::single_component_config(
        "web",
        "http_probe",
        "reuse = { max_requests = 50 }",
        "/h",
    );
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    for i in 0..40 {
        let body = "x".repeat(i);
        let answer = server.send("POST", &format!("/h/echo?i={i}"), body).await;
        let echoed = text(&answer.body);
        assert_eq!(answer.status, 200, "{echoed}");
        assert!(echoed.contains(&format!("path /h/echo?i={i}\n")), "request {i}: {echoed}");
        assert!(echoed.contains(&format!("body {i} bytes\n")), "request {i}: {echoed}");
    }
    let instances = r#"pitstop_instantiation_duration_seconds_count{component="web"}"#;
    assert_eq!(server.metric(instances).await, 1.0, "one instance served the 40 requests");
}

/// A `reuse` setting the platform cannot follow stops `serve` with an
/// error naming it.
#[test]
fn a_bad_reuse_setting_is_refused() {
    for (reuse, expected) in [
        ("{ max_requests = 0 }", "nonzero"),
        ("{ max_request = 10 }", "unknown field `max_request`"),
        ("true", "invalid type: boolean `true`"),
    ] {
        let refused = crate::support::serve_refuses(&config(&format!("reuse = {reuse}")));
        assert!(refused.contains(expected), "{reuse}: {refused}");
    }
}

/// Each request on a warm instance has the whole per-invocation log budget:
/// three requests of 4 lines under a limit of 5 drop none.
#[tokio::test]
async fn each_request_on_a_warm_instance_has_its_own_log_budget() {
    let settings = "max_log_lines = 5\nmax_parallel = 1\nreuse = {}";
    let config = crate::support::single_component_config("busy", "busy", settings, "/busy");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    for _ in 0..3 {
        assert_eq!(server.get("/busy/print/4").await.status, 200);
    }
    let instances = r#"pitstop_instantiation_duration_seconds_count{component="busy"}"#;
    assert_eq!(server.metric(instances).await, 1.0, "one instance served them all");
    let dropped = r#"pitstop_guest_log_dropped_total{component="busy"}"#;
    assert_eq!(server.metric(dropped).await, 0.0, "no line dropped");
    assert_eq!(server.get("/busy/print/6").await.status, 200);
    assert_eq!(server.metric(dropped).await, 1.0, "the limit still holds per request");
}
