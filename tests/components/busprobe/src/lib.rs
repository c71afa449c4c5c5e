//! Publishes and handles events as told, to test the bus and atomic commits.
//!
//! HTTP (any first path segment; it is routed under `/probe`):
//! - `POST /probe/write-then/{ok|fail|trap|loop}` with a body `B`: writes
//!   `marker/B`, publishes `probe.ping` with payload `B`, then answers 200,
//!   answers 500, traps, or spins past its deadline.
//! - `POST /probe/publish/{topic}[?delay=ms]` publishes the body on `topic`
//!   (any topic, declared or not); a bus error answers 422 `{"error"}`.
//! - `POST /probe/publish-many/{topic}/{n}/{kib}` publishes `n` payloads of
//!   `kib` KiB on `topic` in one invocation and answers
//!   `{"published": n}`; the first bus error answers 422 `{"error"}`
//!   (what the host holds for events before the commit is charged to the
//!   component). A 422 commits what was published before the error;
//!   `POST /probe/publish-all/{topic}/{n}/{kib}` answers 500 instead, so
//!   that nothing commits.
//! - `POST /probe/own-writes` writes, deletes and counts inside one
//!   invocation and answers what it read back meanwhile.
//! - `GET /probe/kv/{key}` a value or 404; `GET /probe/seen` every handled
//!   delivery in the order handled.
//!
//! Events: publishes and subscribes to `probe.ping`, `probe.later`,
//! `probe.poison`, `probe.flaky`. Every delivery first logs
//! `busprobe started handling 'PAYLOAD', attempt N` (info level): a mark the
//! tests wait on to know a handler is running, and count to know how often
//! it ran, which the `seen/` log cannot tell (a handler whose commit is
//! refused or lost leaves no entry). A ping or later is recorded with the
//! wall-clock time its handler started (`handled_at`, ms since the epoch);
//! a payload `slow:MS[:anything]` first sleeps MS ms, so that deliveries
//! are in flight when a test wants them to be. A poison always fails. A
//! flaky event fails on its first attempt.

use pitstop_sdk::events::{BusError, publish, publish_delayed};
use pitstop_sdk::{ApiError, Event, Events, Handler, Request, Response, kv};
use serde_json::json;

struct Probe;

impl Handler for Probe {
    fn handle(request: Request) -> Response {
        pitstop_sdk::respond(route(&request))
    }
}

impl Events for Probe {
    const PUBLISHES: &'static [&'static str] =
        &["probe.ping", "probe.later", "probe.poison", "probe.flaky"];
    const SUBSCRIBES: &'static [&'static str] =
        &["probe.ping", "probe.later", "probe.poison", "probe.flaky"];

    fn handle_event(event: Event) -> Result<(), String> {
        let started = now_ms();
        let payload = String::from_utf8_lossy(&event.payload).into_owned();
        pitstop_sdk::log::info(&format!(
            "busprobe started handling '{payload}', attempt {}",
            event.attempt
        ));
        match event.topic.as_str() {
            "probe.poison" => Err("poison".into()),
            "probe.flaky" if event.attempt == 1 => Err("flaky: first attempt fails".into()),
            _ => {
                if let Some(ms) = slow_for(&payload) {
                    // A sleep, not a spin: it keeps the delivery in flight
                    // without taking a CPU from the test's other work.
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                record(&event, started).map_err(|e| e.message)
            }
        }
    }
}

pitstop_sdk::export!(Probe);

/// How long a `slow:MS[:anything]` payload's handler sleeps.
fn slow_for(payload: &str) -> Option<u64> {
    payload.strip_prefix("slow:")?.split(':').next()?.parse().ok()
}

/// The wall clock, ms since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Append the delivery to the `seen/` log, numbered in the order handled;
/// `started` is when its handler started.
fn record(event: &Event, started: u64) -> Result<(), ApiError> {
    let n = kv::increment("seen-count", 1)?;
    let entry = json!({
        "id": event.id,
        "topic": event.topic,
        "payload": String::from_utf8_lossy(&event.payload),
        "attempt": event.attempt,
        "source": event.source,
        "published_at": event.published_at,
        "handled_at": started,
    });
    kv::put_json(&format!("seen/{n:08}"), &entry)
}

fn route(request: &Request) -> Result<Response, ApiError> {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("POST", [_, "write-then", outcome]) => {
            let body = String::from_utf8_lossy(&request.body).into_owned();
            kv::set(&format!("marker/{body}"), b"1")?;
            publish("probe.ping", body.as_bytes())?;
            match *outcome {
                "ok" => Ok(Response::json(200, &json!({ "wrote": body }))),
                "fail" => Err(ApiError::internal("failing on purpose")),
                "trap" => panic!("trapping on purpose"),
                _ => {
                    spin(std::time::Duration::from_secs(3600));
                    Ok(Response::json(200, &json!({})))
                }
            }
        }
        ("POST", [_, "publish", topic]) => {
            let delay = request.query.strip_prefix("delay=").and_then(|d| d.parse().ok());
            let published = match delay {
                Some(ms) => publish_delayed(topic, &request.body, ms),
                None => publish(topic, &request.body),
            };
            match published {
                Ok(()) => Ok(Response::json(200, &json!({ "published": topic }))),
                Err(error) => Err(ApiError::new(422, bus_error(error))),
            }
        }
        ("POST", [_, how @ ("publish-many" | "publish-all"), topic, n, kib]) => {
            let (n, kib): (usize, usize) = (n.parse().unwrap_or(0), kib.parse().unwrap_or(0));
            let payload = vec![b'p'; kib * 1024];
            let status = if *how == "publish-all" { 500 } else { 422 };
            for _ in 0..n {
                if let Err(error) = publish(topic, &payload) {
                    return Err(ApiError::new(status, bus_error(error)));
                }
            }
            Ok(Response::json(200, &json!({ "published": n })))
        }
        ("POST", [_, "own-writes"]) => {
            kv::set("own/a", b"1")?;
            kv::set("own/b", b"2")?;
            let before_delete = kv::exists("own/b")?;
            kv::delete("own/b")?;
            kv::increment("own/n", 5)?;
            let n = kv::increment("own/n", 2)?;
            let page = kv::list_keys("own/", None, 100)?;
            Ok(Response::json(
                200,
                &json!({
                    "a": kv::get("own/a")?.map(|v| String::from_utf8_lossy(&v).into_owned()),
                    "b_before_delete": before_delete,
                    "b": kv::exists("own/b")?,
                    "n": n,
                    "keys": page.keys,
                }),
            ))
        }
        ("GET", [_, "kv", key]) => match kv::get(&key.replace("%2F", "/"))? {
            Some(value) => Ok(Response { status: 200, headers: vec![], body: value }),
            None => Err(ApiError::not_found("no such key")),
        },
        ("GET", [_, "seen"]) => {
            let mut seen = Vec::new();
            for key in kv::all_keys("seen/")? {
                if let Some(entry) = kv::get_json::<serde_json::Value>(&key)? {
                    seen.push(entry);
                }
            }
            Ok(Response::json(200, &seen))
        }
        _ => Err(ApiError::not_found("no such route")),
    }
}

fn bus_error(error: BusError) -> String {
    match error {
        BusError::InvalidTopic(m) => format!("invalid topic: {m}"),
        BusError::UndeclaredTopic(m) => format!("undeclared topic: {m}"),
        BusError::TooLarge(m) => format!("too large: {m}"),
    }
}

/// Busy for `period` (the platform's deadline interrupts it first).
fn spin(period: std::time::Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < period {
        std::hint::black_box(0);
    }
}
