//! Tracing, metrics and readiness over real HTTP: one client trace through
//! all three services and across an event, the JSON log, OTLP export to a
//! collector on loopback, `/metrics`, and `/ready` with an open circuit.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::{Server, eventually, fresh_dir, sample, single_component_config};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-00f067aa0ba902b7-01")
}

async fn json_log_server() -> Server {
    Server::start_with_args(None, fresh_dir(), &["--log-format".as_ref(), "json".as_ref()]).await
}

/// The components whose spans carry `trace_id`, from the JSON log.
fn components_in_trace(log: &str, trace_id: &str) -> BTreeSet<String> {
    let mut components = BTreeSet::new();
    for line in log.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
        let spans: Vec<&Value> =
            entry["spans"].as_array().into_iter().flatten().chain(entry.get("span")).collect();
        if spans.iter().any(|s| s["trace_id"] == trace_id) {
            components
                .extend(spans.iter().filter_map(|s| s["component"].as_str()).map(str::to_string));
        }
    }
    components
}

#[tokio::test]
async fn one_client_trace_spans_all_three_services_and_follows_an_event() {
    let server = json_log_server().await;
    let user_trace = "0af7651916cd43dd8448eb211c80319c";
    let created = server
        .send_with(
            "POST",
            "/users",
            &[("traceparent", &traceparent(user_trace))],
            json!({"name": "Tracy", "email": "tracy@example.com"}).to_string(),
        )
        .await;
    assert_eq!(created.status, 201);
    let user = created.json()["id"].as_str().unwrap().to_string();
    let order = json!({"user_id": user, "items": [{"sku": "A", "quantity": 1, "price": 1200}]});
    let placed = server
        .send_with("POST", "/orders", &[("traceparent", &traceparent(TRACE_ID))], order.to_string())
        .await;
    assert_eq!(placed.status, 201, "{}", String::from_utf8_lossy(&placed.body));
    let answer_trace = placed.header("traceparent").unwrap();
    assert!(answer_trace.starts_with(&format!("00-{TRACE_ID}-")), "{answer_trace}");
    assert!(placed.header("x-request-id").is_some_and(|id| !id.is_empty()));

    let all_three: BTreeSet<String> =
        ["order", "payment", "user"].into_iter().map(String::from).collect();
    eventually("spans of order, user and payment in one trace", Duration::from_secs(5), || {
        let server = &server;
        let all_three = &all_three;
        async move {
            let found = components_in_trace(&server.log(), TRACE_ID);
            found.is_superset(all_three).then_some(())
        }
    })
    .await;
    // user.created reached order in a `deliver` span of the user's trace.
    eventually("the event delivery in the publisher's trace", Duration::from_secs(10), || {
        let server = &server;
        async move {
            server
                .log()
                .lines()
                .any(|line| {
                    let Ok(entry) = serde_json::from_str::<Value>(line) else { return false };
                    let span = &entry["span"];
                    span["name"] == "deliver"
                        && span["component"] == "order"
                        && span["topic"] == "user.created"
                        && span["trace_id"] == user_trace
                })
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace() {
    let server = Server::start().await;
    let answer =
        server.send_with("GET", "/users/usr_nobody", &[("traceparent", "garbage")], "").await;
    let trace = answer.header("traceparent").unwrap();
    // version-traceid-spanid-flags: 00, 32 and 16 lower-case hex digits,
    // neither all zeros (W3C trace context), 2 hex digits of flags.
    let parts: Vec<&str> = trace.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert_eq!(parts.len(), 4, "{trace}");
    assert_eq!(parts[0], "00", "{trace}");
    assert!(hex(parts[1], 32) && parts[1] != "0".repeat(32), "{trace}");
    assert!(hex(parts[2], 16) && parts[2] != "0".repeat(16), "{trace}");
    assert!(hex(parts[3], 2), "{trace}");
    let again =
        server.send_with("GET", "/users/usr_nobody", &[("traceparent", "garbage")], "").await;
    let other = again.header("traceparent").unwrap();
    assert_ne!(&other[3..35], parts[1], "a new trace id each time");
    let first = answer.header("x-request-id").unwrap().to_string();
    let second = server.get("/users/usr_nobody").await;
    assert_ne!(second.header("x-request-id").unwrap(), first, "a new id per request");
    let given = server.send_with("GET", "/users/x", &[("x-request-id", "my-id-1")], "").await;
    assert_eq!(given.header("x-request-id"), Some("my-id-1"), "the client's id is kept");
}

#[tokio::test]
async fn metrics_parse_and_count_what_happened() {
    let server = Server::start().await;
    let before = server.metrics().await;
    assert_eq!(sample(&before, r#"pitstop_deploys_total{component="user"}"#), 1.0);
    let not_found = r#"pitstop_requests_total{component="user",route="/users",status="404"}"#;
    assert_eq!(sample(&before, not_found), 0.0);

    assert_eq!(server.get("/users/usr_nobody").await.status, 404);
    let user = server.create_user("Metric", "metric@example.com").await;
    assert_eq!(server.get(&format!("/users/{user}")).await.status, 200);

    let after = server.metrics().await;
    assert_eq!(sample(&after, not_found), 1.0);
    let created = r#"pitstop_requests_total{component="user",route="/users",status="201"}"#;
    assert_eq!(sample(&after, created), 1.0);
    let latency =
        r#"pitstop_request_duration_seconds_count{component="user",route="/users",status="201"}"#;
    assert_eq!(sample(&after, latency), 1.0);
    assert!(
        sample(&after, r#"pitstop_instantiation_duration_seconds_count{component="user"}"#) >= 3.0
    );
    assert!(
        sample(&after, r#"pitstop_keyvalue_operations_total{keyspace="user",op="set"}"#) >= 1.0
    );
    assert!(
        sample(&after, r#"pitstop_keyvalue_bytes_total{keyspace="user",direction="written"}"#)
            > 0.0
    );
    assert_eq!(
        sample(&after, r#"pitstop_bus_published_total{source="user",topic="user.created"}"#),
        1.0
    );
    assert_eq!(sample(&after, r#"pitstop_breaker_state{component="user"}"#), 0.0);
    assert_eq!(sample(&after, r#"pitstop_in_flight_invocations{component="user"}"#), 0.0);
    eventually("order handled user.created", Duration::from_secs(10), || {
        let server = &server;
        async move {
            let now = server.metrics().await;
            (sample(&now, r#"pitstop_bus_delivered_total{subscriber="order"}"#) == 1.0)
                .then_some(())
        }
    })
    .await;

    let rolled = server.admin("POST", "/admin/components/user/rollback", "").await;
    assert_eq!(rolled.status, 409, "one version only: nothing to roll back to");
    assert_eq!(
        sample(&server.metrics().await, r#"pitstop_rollbacks_total{component="user"}"#),
        0.0
    );
}

#[tokio::test]
async fn ready_is_503_while_a_circuit_is_open_and_metrics_show_it() {
    let config = single_component_config(
        "trap",
        "trap",
        "breaker = { consecutive_failures = 1, open_ms = 60000 }",
        "/trap",
    );
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    assert_eq!(server.get("/ready").await.status, 200);
    assert_eq!(server.get("/trap/panic").await.status, 500);
    assert_eq!(server.get("/trap/ok").await.status, 503, "the circuit is open");
    let ready = server.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["checks"]["component:trap"], "circuit open");
    assert_eq!(server.get("/health").await.status, 200, "still alive");
    let now = server.metrics().await;
    assert_eq!(sample(&now, r#"pitstop_breaker_state{component="trap"}"#), 2.0);
    assert_eq!(
        sample(&now, r#"pitstop_breaker_transitions_total{component="trap",to="open"}"#),
        1.0
    );
}

/// An OTLP/HTTP collector on loopback that keeps every body it is sent.
async fn collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let kept = bodies.clone();
    let address = crate::support::loopback_server(move |parts: http::request::Parts, body| {
        if parts.uri.path() == "/v1/traces" {
            kept.lock().unwrap().push(body);
        }
        async { http::Response::new(Full::new(Bytes::new())) }
    })
    .await;
    (address, bodies)
}

#[tokio::test]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_set() {
    let (endpoint, bodies) = collector().await;
    let env =
        [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let server = Server::start_with_env(None, fresh_dir(), &[], &env).await;
    let answer = server
        .send_with("GET", "/users/usr_nobody", &[("traceparent", &traceparent(TRACE_ID))], "")
        .await;
    assert_eq!(answer.status, 404);
    let trace_bytes: Vec<u8> =
        (0..16).map(|i| u8::from_str_radix(&TRACE_ID[i * 2..i * 2 + 2], 16).unwrap()).collect();
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    eventually("the request's spans at the collector", Duration::from_secs(10), || {
        let bodies = bodies.clone();
        let trace_bytes = trace_bytes.clone();
        async move {
            let bodies = bodies.lock().unwrap();
            let exported: Vec<u8> = bodies.iter().flat_map(|b| b.iter().copied()).collect();
            (contains(&exported, &trace_bytes)
                && contains(&exported, b"invoke")
                && contains(&exported, b"keyvalue.get")
                && contains(&exported, b"pitstop"))
            .then_some(())
        }
    })
    .await;
}

/// By default the log does not grow with the traffic: no line per request.
/// With `[gateway] access_log = true` each request writes one line under
/// `pitstop::access` with its method, path (not the query), status,
/// duration, component, version and trace id, including requests the
/// gateway answers itself.
#[tokio::test]
async fn the_access_log_is_off_by_default_and_says_what_was_served_when_on() {
    let server = Server::start().await;
    let before = server.log_now().await.lines().count();
    for _ in 0..50 {
        assert_eq!(server.get("/users/usr_nobody").await.status, 404);
    }
    // One line is the second marker's.
    let grown = server.log_now().await.lines().count() - before;
    assert!(grown < 5, "{grown} lines for 50 requests:\n{}", server.log());

    let config = crate::resilience::config("[gateway]\naccess_log = true");
    let server = Server::start_with_args(
        Some(&config),
        fresh_dir(),
        &["--log-format".as_ref(), "json".as_ref()],
    )
    .await;
    let traced = [("traceparent", traceparent(TRACE_ID))];
    let traced: Vec<(&str, &str)> = traced.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let answer = server.send_with("GET", "/users/usr_nobody?secret=1", &traced, "").await;
    assert_eq!(answer.status, 404);
    assert_eq!(server.get("/nowhere").await.status, 404);
    let access = |log: &str| -> Vec<Value> {
        log.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["target"] == "pitstop::access")
            .map(|entry| entry["fields"].clone())
            .collect()
    };
    let lines = eventually("two access lines", Duration::from_secs(5), || async {
        let lines = access(&server.log());
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let user = &lines[0];
    assert_eq!(user["method"], "GET", "{user}");
    assert_eq!(user["path"], "/users/usr_nobody", "{user}");
    assert_eq!(user["status"], 404, "{user}");
    assert_eq!(user["component"], "user", "{user}");
    assert_eq!(user["version"], 1, "{user}");
    assert_eq!(user["trace_id"], TRACE_ID, "{user}");
    assert!(user["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{user}");
    let gateway = &lines[1];
    assert_eq!(
        (gateway["path"].as_str(), gateway["status"].as_i64()),
        (Some("/nowhere"), Some(404))
    );
    assert!(gateway.get("component").is_none(), "the gateway answered itself: {gateway}");
}
