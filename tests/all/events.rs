//! The message bus and atomic invocations, through the `busprobe` test
//! component: at-least-once delivery across crashes, order per topic,
//! retries and dead letters, and invocations that commit all or nothing.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{Server, eventually, fresh_dir, test_components};

fn config(bus: &str) -> String {
    format!(
        r#"
        [components.busprobe]
        path = "{probe}"
        deadline_ms = 2500

        [[routes]]
        prefix = "/probe"
        component = "busprobe"
        [[routes]]
        prefix = "/users"
        component = "user"

        [bus]
        {bus}
        "#,
        probe = test_components().join("busprobe.wasm").display(),
    )
}

/// [`config`] with a second copy of busprobe, `sender` (routed at
/// `/sender`), to publish to busprobe while busprobe itself cannot answer
/// requests (undeployed, circuit open). It subscribes to the same topics,
/// so its own deliveries show when the dispatcher has passed by.
/// `settings` are busprobe's extra lines.
fn config_with_sender(bus: &str, settings: &str) -> String {
    let probe = test_components().join("busprobe.wasm");
    config(bus).replace("deadline_ms = 2500", &format!("deadline_ms = 2500\n{settings}")).replace(
        "[bus]",
        &format!(
            "[components.sender]\npath = \"{}\"\n[[routes]]\nprefix = \"/sender\"\n\
             component = \"sender\"\n\n[bus]",
            probe.display()
        ),
    )
}

/// Every delivery the probe handled, in the order it handled them.
async fn seen(server: &Server) -> Vec<Value> {
    seen_by(server, "/probe").await
}

/// Every delivery the busprobe routed at `prefix` handled, in order.
async fn seen_by(server: &Server, prefix: &str) -> Vec<Value> {
    let answer = server.get(&format!("{prefix}/seen")).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    answer.json().as_array().unwrap().clone()
}

/// The mark busprobe logs when its handler starts on `payload`.
fn started(payload: &str, attempt: u32) -> String {
    format!("busprobe started handling '{payload}', attempt {attempt}")
}

/// How many times busprobe's handler started on `payload`, any attempt.
fn runs(log: &str, payload: &str) -> usize {
    log.matches(&format!("busprobe started handling '{payload}',")).count()
}

/// Wait until nothing is queued for busprobe and no invocation of it runs:
/// every delivery made has been committed and removed, so nothing more can
/// arrive (no redelivery is pending).
async fn drained(server: &Server) {
    eventually("busprobe's queue to drain", Duration::from_secs(60), || async {
        let lag = server.metric(r#"pitstop_bus_lag_events{subscriber="busprobe"}"#).await;
        let running = server.metric(r#"pitstop_in_flight_invocations{component="busprobe"}"#);
        (lag == 0.0 && running.await == 0.0).then_some(())
    })
    .await;
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn payloads(seen: &[Value]) -> Vec<String> {
    seen.iter().map(|s| s["payload"].as_str().unwrap().to_string()).collect()
}

/// Wait until the probe has handled `count` deliveries; returns them.
async fn wait_for_seen(server: &Server, count: usize) -> Vec<Value> {
    eventually("deliveries", Duration::from_secs(15), || async {
        let seen = seen(server).await;
        (seen.len() >= count).then_some(seen)
    })
    .await
}

#[tokio::test]
async fn events_arrive_once_in_order_with_their_id_and_source() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    let sent: Vec<String> = (0..20).map(|n| format!("ping-{n}")).collect();
    for payload in &sent {
        let answer = server.send("POST", "/probe/write-then/ok", payload.clone()).await;
        assert_eq!(answer.status, 200);
    }
    let seen = wait_for_seen(&server, sent.len()).await;
    // Once nothing is queued or running, nothing more can arrive: none twice.
    drained(&server).await;
    let seen_again = self::seen(&server).await;
    assert_eq!(
        seen_again.len(),
        sent.len(),
        "every event handled exactly once: {seen_again:#?}\n{}",
        server.log()
    );
    assert_eq!(payloads(&seen), sent, "in publishing order");
    let ids: HashSet<&str> = seen.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), sent.len(), "ids are unique");
    for delivery in &seen {
        assert_eq!(delivery["topic"], "probe.ping");
        assert_eq!(delivery["source"], "busprobe");
        assert_eq!(delivery["attempt"], 1);
        assert!(delivery["published_at"].as_u64().unwrap() > 1_600_000_000_000);
    }
}

#[tokio::test]
async fn a_failed_invocation_leaves_no_write_and_no_event() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    for (outcome, status) in [("trap", 500), ("fail", 500), ("loop", 504)] {
        let answer = server.send("POST", &format!("/probe/write-then/{outcome}"), outcome).await;
        assert_eq!(answer.status, status, "{outcome}");
    }
    assert_eq!(server.send("POST", "/probe/write-then/ok", "ok").await.status, 200);
    // The event of the good request arrives; the failed ones never do.
    let seen = wait_for_seen(&server, 1).await;
    drained(&server).await;
    assert_eq!(payloads(&seen), ["ok"]);
    assert_eq!(self::seen(&server).await.len(), 1);
    assert_eq!(server.get("/probe/kv/marker%2Fok").await.status, 200);
    for outcome in ["trap", "fail", "loop"] {
        let marker = server.get(&format!("/probe/kv/marker%2F{outcome}")).await;
        assert_eq!(marker.status, 404, "the write of the {outcome} request was rolled back");
    }
}

#[tokio::test]
async fn an_invocation_reads_its_own_writes() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    let answer = server.send("POST", "/probe/own-writes", "").await;
    assert_eq!(answer.status, 200);
    let seen = answer.json();
    assert_eq!(seen["a"], "1");
    assert_eq!(seen["b_before_delete"], true);
    assert_eq!(seen["b"], false);
    assert_eq!(seen["n"], 7);
    assert_eq!(seen["keys"], serde_json::json!(["own/a", "own/n"]));
    // And committed, they are what the next request sees.
    assert_eq!(&server.get("/probe/kv/own%2Fn").await.body[..], b"7");
    assert_eq!(server.get("/probe/kv/own%2Fb").await.status, 404);
}

#[tokio::test]
async fn undeclared_and_malformed_topics_are_refused() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    let undeclared = server.send("POST", "/probe/publish/user.created", "x").await;
    assert_eq!(undeclared.status, 422);
    assert!(undeclared.error().contains("undeclared topic"), "{}", undeclared.error());
    let malformed = server.send("POST", "/probe/publish/Not..A.Topic", "x").await;
    assert_eq!(malformed.status, 422);
    assert!(malformed.error().contains("invalid topic"), "{}", malformed.error());
    // The delay limit is a week to the millisecond (docs/events.md).
    let week = 7 * 24 * 3600 * 1000;
    let path = format!("/probe/publish/probe.ping?delay={week}");
    let at_limit = server.send("POST", &path, "x").await;
    assert_eq!(at_limit.status, 200, "a delay of exactly a week is accepted");
    let path = format!("/probe/publish/probe.ping?delay={}", week + 1);
    let too_late = server.send("POST", &path, "x").await;
    assert_eq!(too_late.status, 422);
    let limit = format!("a delay of {} ms is longer than the limit of {week} ms", week + 1);
    assert!(too_late.error().contains(&limit), "{}", too_late.error());
}

/// An event's payload may be 1 MiB and no more (docs/events.md): the guest
/// sees `too-large` for one byte more, and that one is not published.
#[tokio::test]
async fn an_event_payload_is_at_most_a_mebibyte() {
    // Requests big enough to carry such a payload.
    let config = format!("[gateway]\nmax_request_body = 2097152\n{}", config(""));
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let at_limit = server.send("POST", "/probe/publish/probe.ping", vec![b'x'; 1 << 20]).await;
    assert_eq!(at_limit.status, 200, "{}", String::from_utf8_lossy(&at_limit.body));
    let over = server.send("POST", "/probe/publish/probe.ping", vec![b'x'; (1 << 20) + 1]).await;
    assert_eq!(over.status, 422);
    assert!(over.error().contains("too large"), "{}", over.error());
    // The 1 MiB one was committed for publication; the other never was.
    let published = r#"pitstop_bus_published_total{source="busprobe",topic="probe.ping"}"#;
    assert_eq!(server.metric(published).await, 1.0);
}

/// One invocation may publish at most 100 events (docs/events.md): the 101st is an
/// error to the guest, and the invocation failing publishes none of them;
/// 100 are all published and delivered.
#[tokio::test]
async fn one_invocation_publishes_at_most_100_events() {
    let config = crate::support::single_component_config("busy", "busy", "", "/busy");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let published = r#"pitstop_bus_published_total{source="busy",topic="busy.burn"}"#;
    let delivered = r#"pitstop_bus_delivered_total{subscriber="busy"}"#;
    let refused = server.send("POST", "/busy/publish/101/0", "").await;
    assert_eq!(refused.status, 500, "{}", String::from_utf8_lossy(&refused.body));
    assert!(refused.error().contains("at most 100 events"), "{}", refused.error());
    assert_eq!(server.metric(published).await, 0.0, "nothing of a failed invocation");
    let accepted = server.send("POST", "/busy/publish/100/0", "").await;
    assert_eq!(accepted.status, 200, "{}", String::from_utf8_lossy(&accepted.body));
    assert_eq!(server.metric(published).await, 100.0);
    crate::support::eventually("100 deliveries", Duration::from_secs(30), || async {
        (server.metric(delivered).await == 100.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn poison_is_dead_lettered_while_other_events_flow() {
    // The poison's attempts at 0, 1 and 3 s: it is dead only after 3 s,
    // long after the flaky event's second attempt at 1 s.
    let bus = "max_attempts = 3\nbackoff_base_ms = 1000\nbackoff_max_ms = 2000";
    // A breaker that would open after two failures in a row, for the check
    // below that handler errors do not count as failures.
    let config = config(bus).replace(
        "deadline_ms = 2500",
        "deadline_ms = 2500\nbreaker = { consecutive_failures = 2, open_ms = 60000 }",
    );
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    assert_eq!(server.send("POST", "/probe/publish/probe.poison", "bad").await.status, 200);
    assert_eq!(server.send("POST", "/probe/publish/probe.flaky", "flaky").await.status, 200);
    assert_eq!(server.send("POST", "/probe/publish/probe.ping", "good").await.status, 200);

    // The ping and the flaky event (on its second attempt) get through
    // while the poison is still being retried.
    let seen = wait_for_seen(&server, 2).await;
    let flaky = seen.iter().find(|s| s["payload"] == "flaky").expect("the flaky event arrived");
    assert_eq!(flaky["attempt"], 2);
    assert!(seen.iter().any(|s| s["payload"] == "good"));
    let meanwhile = server.admin("GET", "/admin/dead-letters", "").await.json();
    assert_eq!(
        meanwhile["dead_letters"],
        serde_json::json!([]),
        "the others arrived while the poison was still being retried"
    );

    let letters = eventually("a dead letter", Duration::from_secs(10), || async {
        let answer = server.admin("GET", "/admin/dead-letters", "").await;
        assert_eq!(answer.status, 200);
        let letters = answer.json()["dead_letters"].as_array().unwrap().clone();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter["subscriber"], "busprobe");
    assert_eq!(letter["topic"], "probe.poison");
    assert_eq!(letter["payload"], "bad");
    assert_eq!(letter["attempts"], 3);
    assert!(letter["last_error"].as_str().unwrap().contains("poison"), "{letter}");
    let id = letter["id"].as_str().unwrap();
    let dead = r#"pitstop_bus_dead_lettered_total{subscriber="busprobe"}"#;
    assert_eq!(server.metric(dead).await, 1.0);
    // Two retries of the poison, one of the flaky event.
    let retried = r#"pitstop_bus_retried_total{subscriber="busprobe"}"#;
    assert_eq!(server.metric(retried).await, 3.0);

    // The lane is free again: a later ping still arrives.
    assert_eq!(server.send("POST", "/probe/publish/probe.ping", "after").await.status, 200);
    wait_for_seen(&server, 3).await;

    // Replay sends it through all its attempts again, back to the dead letters.
    let path = format!("/admin/dead-letters/busprobe/{id}");
    let replayed = server.admin("POST", &format!("{path}/replay"), "").await;
    assert_eq!(replayed.status, 200, "{}", String::from_utf8_lossy(&replayed.body));
    let empty = server.admin("GET", "/admin/dead-letters", "").await.json();
    assert_eq!(empty["dead_letters"], serde_json::json!([]), "replayed, so no longer dead");
    eventually("the replayed poison to die again", Duration::from_secs(10), || async {
        let answer = server.admin("GET", "/admin/dead-letters?subscriber=busprobe", "").await;
        let letters = answer.json()["dead_letters"].as_array().unwrap().clone();
        (letters.len() == 1 && letters[0]["id"] == id).then_some(())
    })
    .await;
    assert_eq!(server.metric(dead).await, 2.0, "it died twice");

    // Three handler errors in a row: the application saying "not now", not
    // the component failing, so its circuit stays closed.
    let still = server.send("POST", "/probe/publish/probe.ping", "still").await;
    assert_eq!(still.status, 200, "handler errors do not open the circuit");

    assert_eq!(server.admin("DELETE", &path, "").await.status, 200);
    assert_eq!(server.admin("DELETE", &path, "").await.status, 404);
    assert_eq!(server.admin("POST", &format!("{path}/replay"), "").await.status, 404);
    let none = server.admin("GET", "/admin/dead-letters", "").await.json();
    assert_eq!(none["dead_letters"], serde_json::json!([]));
}

/// A committed event is delivered after a `kill -9`, and an event whose
/// handler was cut short by the kill is delivered again and handled once.
#[tokio::test]
async fn a_committed_event_survives_a_kill_and_is_handled_once() {
    let data = fresh_dir();
    let config = config("");
    let server = Server::start_with(Some(&config), data.clone()).await;
    // Committed, due in 4 s: the host dies before delivering it.
    let later = server.send("POST", "/probe/publish/probe.later?delay=4000", "later").await;
    assert_eq!(later.status, 200);
    // Committed, and its handler (2 s long) running when the host dies.
    let cut = "slow:2000:cut";
    assert_eq!(server.send("POST", "/probe/publish/probe.ping", cut).await.status, 200);
    eventually("the handler to start", Duration::from_secs(20), || async {
        server.log().contains(&started(cut, 1)).then_some(())
    })
    .await;
    assert!(!server.stop_with("KILL").await.success());

    let server = Server::start_with(Some(&config), data).await;
    wait_for_seen(&server, 2).await;
    drained(&server).await;
    let seen = seen(&server).await;
    let mut handled = payloads(&seen);
    handled.sort();
    assert_eq!(handled, ["later", cut], "each handled exactly once; seen: {seen:?}");
    // The cut handler had not committed: it ran again after the restart.
    assert_eq!(runs(&server.log(), cut), 1, "redelivered once after the restart");
    assert!(server.log().contains(&started(cut, 1)), "a crash is not a failed attempt");
    assert!(seen.iter().all(|s| s["attempt"] == 1), "{seen:?}");
}

/// The handled mark (docs/events.md, "The bus"): a handler's writes commit in one
/// batch with a mark that it handled the event, and a marked event is
/// dropped rather than delivered again, even when the host dies right
/// after the commit, before the event left the queue. The fail point
/// `dispatch-after-handled-commit` (cargo feature `pitstop-host/failpoints`,
/// which `scripts/test` turns on) kills the host at exactly that step.
#[tokio::test]
async fn an_event_whose_handler_committed_is_not_handled_again_after_a_crash() {
    let data = fresh_dir();
    let config = config("");
    let armed = [("FAILPOINTS", "dispatch-after-handled-commit=return")];
    let server = Server::start_with_env(Some(&config), data.clone(), &[], &armed).await;
    // The fail point may kill the host before this answer is written out
    // (the event is relayed and handled as soon as it is committed), so a
    // broken connection is fine; a refusal is not. The restart below shows
    // the event was committed.
    let published = server.try_send("POST", "/probe/publish/probe.ping", "once").await;
    assert!(
        published.as_ref().is_none_or(|a| a.status == 200),
        "{:?}",
        published.map(|a| a.status)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains("fail point dispatch-after-handled-commit: killing the process") {
        assert!(
            Instant::now() < deadline,
            "the host did not die at the fail point: build it with \
             `--features pitstop-host/failpoints` (scripts/test does); its log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It killed itself (the status of a process already dead, not of this kill).
    let pid = server.pid();
    eventually("the host to be dead", Duration::from_secs(10), || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        (state == Some(Some('Z'))).then_some(())
    })
    .await;
    let first_log = server.log();
    let status = server.stop_with("KILL").await;
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status:?}");
    assert_eq!(runs(&first_log, "once"), 1, "{first_log}");

    let server = Server::start_with(Some(&config), data).await;
    // An event behind it in its lane: lanes go in order, so once this one
    // is handled, the marked one ahead of it has been dealt with.
    assert_eq!(server.send("POST", "/probe/publish/probe.ping", "after").await.status, 200);
    wait_for_seen(&server, 2).await;
    drained(&server).await;
    // The log arrives through a pipe, after the fact: wait for the line of
    // `after`. Lines come in order, and so does the lane, so once it is
    // there any delivery of `once` would be there before it.
    let log = eventually("the log to show `after` handled", Duration::from_secs(10), || async {
        let log = server.log();
        (runs(&log, "after") > 0).then_some(log)
    })
    .await;
    assert_eq!(runs(&log, "once"), 0, "the marked event was delivered again:\n{log}");
    assert_eq!(runs(&log, "after"), 1, "{log}");
    // The handler's write from before the crash is there: the commit landed.
    assert_eq!(payloads(&seen(&server).await), ["once", "after"]);
    let delivered = r#"pitstop_bus_delivered_total{subscriber="busprobe"}"#;
    assert_eq!(server.metric(delivered).await, 1.0, "only `after` delivered since the restart");
}

/// Hot swaps while deliveries are in flight and more are queued: none is
/// lost, none handled twice, and a lane stays in order across versions.
#[tokio::test]
async fn hot_swaps_neither_lose_nor_duplicate_events() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    let wasm = std::fs::read(test_components().join("busprobe.wasm")).unwrap();
    let in_flight = r#"pitstop_in_flight_invocations{component="busprobe"}"#;
    let mut sent = Vec::new();
    for round in 0..4 {
        // One lane, one delivery at a time, 150 ms each: the round takes
        // over a second to handle, so most of it is queued at the swap.
        for n in 0..8 {
            let payload = format!("slow:150:r{round}-{n}");
            let answer = server.send("POST", "/probe/write-then/ok", payload.clone()).await;
            assert_eq!(answer.status, 200);
            sent.push(payload);
        }
        eventually("a delivery in flight", Duration::from_secs(20), || async {
            (server.metric(in_flight).await >= 1.0).then_some(())
        })
        .await;
        let swapped = server.admin("PUT", "/admin/components/busprobe", wasm.clone()).await;
        assert_eq!(swapped.status, 200, "{}", String::from_utf8_lossy(&swapped.body));
        let handled = seen(&server).await.len();
        let sent_so_far = sent.len();
        assert!(
            handled < sent_so_far,
            "round {round}: {handled} of {sent_so_far} handled at the swap"
        );
    }
    let handled = eventually("every delivery", Duration::from_secs(60), || async {
        let seen = seen(&server).await;
        (seen.len() >= sent.len()).then_some(seen)
    })
    .await;
    drained(&server).await;
    assert_eq!(seen(&server).await.len(), sent.len(), "no duplicates");
    assert_eq!(payloads(&handled), sent, "none lost, still in order");
    let log = server.log();
    for payload in &sent {
        assert_eq!(runs(&log, payload), 1, "{payload} handled once");
    }
}

/// A subscriber whose circuit is open is not called, and that is not
/// counted as an attempt: with `max_attempts = 1` the event is not
/// dead-lettered but delivered once the breaker lets calls through again.
#[tokio::test]
async fn a_circuit_open_subscriber_is_retried_without_counting_an_attempt() {
    let config = config_with_sender(
        "max_attempts = 1",
        "breaker = { consecutive_failures = 2, open_ms = 5000 }",
    );
    // The dispatcher's postponements are logged at debug level.
    let env = [("RUST_LOG", "info,pitstop_host::events::dispatch=debug")];
    let server = Server::start_with_env(Some(&config), fresh_dir(), &[], &env).await;
    for _ in 0..2 {
        assert_eq!(server.send("POST", "/probe/write-then/trap", "t").await.status, 500);
    }
    let refused = server.get("/probe/seen").await;
    assert_eq!(refused.status, 503, "the circuit is open");
    let open = r#"pitstop_breaker_state{component="busprobe"}"#;
    assert_eq!(server.metric(open).await, 2.0);

    let sent = server.send("POST", "/sender/publish/probe.ping", "while-open").await;
    assert_eq!(sent.status, 200);
    eventually("the delivery to be postponed", Duration::from_secs(20), || async {
        server
            .log()
            .lines()
            .any(|line| line.contains("postponed") && line.contains("busprobe"))
            .then_some(())
    })
    .await;
    let delivered = r#"pitstop_bus_delivered_total{subscriber="busprobe"}"#;
    assert_eq!(server.metric(delivered).await, 0.0, "not called while open");
    // The sender's copy is delivered in its own lane, maybe after the
    // postponement: wait for it, then check it is the only run.
    eventually("the sender's copy", Duration::from_secs(10), || async {
        (runs(&server.log(), "while-open") >= 1).then_some(())
    })
    .await;
    assert_eq!(runs(&server.log(), "while-open"), 1, "only the sender's copy ran");
    let letters = server.admin("GET", "/admin/dead-letters", "").await.json();
    assert_eq!(letters["dead_letters"], serde_json::json!([]), "not counted as an attempt");

    eventually("the delivery once the circuit lets it through", Duration::from_secs(30), || {
        let server = &server;
        async move { (server.metric(delivered).await == 1.0).then_some(()) }
    })
    .await;
    assert_eq!(server.metric(open).await, 0.0, "the delivery closed the circuit again");
    let seen = seen(&server).await;
    assert_eq!(payloads(&seen), ["while-open"]);
    assert_eq!(seen[0]["attempt"], 1, "the postponements were not attempts");
    let letters = server.admin("GET", "/admin/dead-letters", "").await.json();
    assert_eq!(letters["dead_letters"], serde_json::json!([]));
    let retried = r#"pitstop_bus_retried_total{subscriber="busprobe"}"#;
    assert_eq!(server.metric(retried).await, 0.0);
}

/// A subscriber whose bulkhead is full (every slot taken and its queue
/// too) is not called, and that is not counted as an attempt either: with
/// `max_attempts = 1` the event is delivered once a slot is free, not
/// dead-lettered.
#[tokio::test]
async fn an_overloaded_subscriber_is_retried_without_counting_an_attempt() {
    let config = config_with_sender("max_attempts = 1", "max_concurrency = 1");
    // The dispatcher's postponements are logged at debug level.
    let env = [("RUST_LOG", "info,pitstop_host::events::dispatch=debug")];
    let server = Server::start_with_env(Some(&config), fresh_dir(), &[], &env).await;
    // One request holds busprobe's only slot until its deadline (2.5 s),
    // a second waits for it: the bulkhead refuses anything more.
    let hang = || server.send("POST", "/probe/write-then/hang", "hang");
    let (held, sent) = tokio::join!(futures::future::join(hang(), hang()), async {
        server.wait_in_flight("busprobe", 1.0).await;
        let sent = server.send("POST", "/sender/publish/probe.ping", "while-full").await;
        eventually("the delivery to be postponed", Duration::from_secs(20), || async {
            let log = server.log();
            let postponed = log.lines().any(|l| l.contains("postponed") && l.contains("busprobe"));
            postponed.then_some(())
        })
        .await;
        sent
    });
    assert_eq!(sent.status, 200);
    assert_eq!((held.0.status, held.1.status), (504, 504), "both held to their deadline");
    let delivered = eventually("the delivery once a slot is free", Duration::from_secs(30), || {
        let server = &server;
        async move {
            let seen = seen(server).await;
            seen.iter().any(|s| s["payload"] == "while-full").then_some(seen)
        }
    })
    .await;
    assert_eq!(payloads(&delivered), ["while-full"]);
    let letters = server.admin("GET", "/admin/dead-letters", "").await.json();
    assert_eq!(letters["dead_letters"], serde_json::json!([]), "not counted as an attempt");
}

/// Events queued for a subscriber wait while it is undeployed and are
/// delivered, in order and once, when it is back. (Events published while
/// it is away are not queued for it: the bus delivers to the components
/// subscribed when an event is relayed, docs/events.md, "The bus".)
#[tokio::test]
async fn an_undeployed_subscriber_keeps_its_queue_until_it_is_back() {
    let config = config_with_sender("", "");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let lag = r#"pitstop_bus_lag_events{subscriber="busprobe"}"#;
    let kept: Vec<String> = (0..5).map(|n| format!("kept-{n}")).collect();
    let published = Instant::now();
    for payload in &kept {
        let path = "/sender/publish/probe.later?delay=3000";
        assert_eq!(server.send("POST", path, payload.clone()).await.status, 200);
    }
    // Relayed: queued for busprobe (and for the sender), not yet due.
    eventually("the events queued for busprobe", Duration::from_secs(10), || async {
        (server.metric(lag).await == 5.0).then_some(())
    })
    .await;
    assert_eq!(server.admin("DELETE", "/admin/components/busprobe", "").await.status, 200);
    assert!(
        published.elapsed() < Duration::from_millis(3000),
        "undeployed only after the events were due; the test proves nothing"
    );
    let away = server.send("POST", "/sender/publish/probe.ping", "while-away").await;
    assert_eq!(away.status, 200);
    // The sender's copies are due and delivered at the same time as
    // busprobe's would be: once the sender has them all, the dispatcher has
    // passed busprobe's lane by.
    eventually("the sender's deliveries", Duration::from_secs(20), || async {
        (seen_by(&server, "/sender").await.len() == 6).then_some(())
    })
    .await;
    assert_eq!(server.metric(lag).await, 5.0, "kept while undeployed");
    let letters = server.admin("GET", "/admin/dead-letters", "").await.json();
    assert_eq!(letters["dead_letters"], serde_json::json!([]));

    let wasm = std::fs::read(test_components().join("busprobe.wasm")).unwrap();
    let back = server.admin("PUT", "/admin/components/busprobe", wasm).await;
    assert_eq!(back.status, 200, "{}", String::from_utf8_lossy(&back.body));
    wait_for_seen(&server, kept.len()).await;
    drained(&server).await;
    let seen = seen(&server).await;
    assert_eq!(payloads(&seen), kept, "all of them, once, in order");
    assert!(seen.iter().all(|s| s["attempt"] == 1), "waiting was not an attempt: {seen:?}");
}

/// `publish-delayed` is a durable timer: the event is delivered no earlier
/// than its delay after the publishing invocation committed, and it does
/// arrive.
#[tokio::test]
async fn a_delayed_event_is_delivered_no_earlier_than_its_delay() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    let delay = 2000;
    let before = now_ms();
    let path = format!("/probe/publish/probe.later?delay={delay}");
    assert_eq!(server.send("POST", &path, "timer").await.status, 200);
    let answered = now_ms();
    let seen = eventually("the delayed event", Duration::from_secs(30), || async {
        let seen = seen(&server).await;
        (!seen.is_empty()).then_some(seen)
    })
    .await;
    assert_eq!(payloads(&seen), ["timer"]);
    // published_at is the commit, which happened while the request ran.
    let committed = seen[0]["published_at"].as_u64().unwrap();
    assert!((before..=answered).contains(&committed), "{before} {committed} {answered}");
    let handled = seen[0]["handled_at"].as_u64().unwrap();
    assert!(
        handled >= committed + delay,
        "handled {} ms after the commit, the delay is {delay} ms",
        handled as i64 - committed as i64
    );
}

#[tokio::test]
async fn concurrent_increments_are_never_lost() {
    let config = crate::support::single_component_config("kvprobe", "kvprobe", "", "/kv");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let clients = (0..8).map(|_| async {
        for _ in 0..25 {
            assert_eq!(server.send("POST", "/kv/incr/hits", "").await.status, 200);
        }
    });
    futures::future::join_all(clients).await;
    let total = server.get("/kv/kv/hits").await;
    assert_eq!(&total.body[..], b"200", "8 clients x 25 increments");
}

#[tokio::test]
async fn of_concurrent_claims_to_one_email_exactly_one_wins() {
    let server = Server::start().await;
    let attempts = (0..10).map(|n| {
        let server = &server;
        async move {
            let body =
                serde_json::json!({"name": format!("Twin {n}"), "email": "twin@example.com"});
            server.post("/users", body).await.status
        }
    });
    let mut statuses = futures::future::join_all(attempts).await;
    statuses.sort();
    assert_eq!(statuses[0], 201);
    assert!(statuses[1..].iter().all(|s| *s == 409), "{statuses:?}");
}

#[tokio::test]
async fn a_component_declaring_a_malformed_topic_is_refused() {
    let server = Server::start().await;
    let wasm = std::fs::read(test_components().join("badtopics.wasm")).unwrap();
    let refused = server.admin("PUT", "/admin/components/badtopics", wasm).await;
    assert_eq!(refused.status, 422);
    assert!(refused.error().contains("\"Not A Topic\" is not a topic"), "{}", refused.error());
}

#[tokio::test]
async fn events_for_a_topic_the_new_version_dropped_go_to_the_dead_letters() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    let queued = server.send("POST", "/probe/publish/probe.later?delay=1000", "orphan").await;
    assert_eq!(queued.status, 200);
    // The new version under the same name subscribes to nothing.
    let kvprobe = std::fs::read(test_components().join("kvprobe.wasm")).unwrap();
    assert_eq!(server.admin("PUT", "/admin/components/busprobe", kvprobe).await.status, 200);
    let letter = eventually("the dead letter", Duration::from_secs(10), || async {
        let answer = server.admin("GET", "/admin/dead-letters", "").await;
        answer.json()["dead_letters"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(letter["payload"], "orphan");
    assert!(letter["last_error"].as_str().unwrap().contains("no longer subscribes"), "{letter}");
}

/// The dead-letter listing is paged and bounded whatever the letters hold:
/// 25 letters come 10 at a time, each once, in order, with `next` naming
/// where the following page starts; a 200 KiB payload is cut to 4 KiB in
/// the listing and whole when its letter is asked for alone. (One unpaged
/// 125 MB body before, polled by the console every 2 s.)
#[tokio::test]
async fn dead_letters_are_listed_a_page_at_a_time() {
    let server = Server::start_with(Some(&config("max_attempts = 1")), fresh_dir()).await;
    let big = "x".repeat(200 << 10);
    assert_eq!(server.send("POST", "/probe/publish/probe.poison", big.clone()).await.status, 200);
    for n in 0..24 {
        let published = server.send("POST", "/probe/publish/probe.poison", format!("p{n}")).await;
        assert_eq!(published.status, 200);
    }
    eventually("25 dead letters", Duration::from_secs(20), || async {
        let all = server.admin("GET", "/admin/dead-letters?limit=1000", "").await.json();
        (all["dead_letters"].as_array().unwrap().len() == 25).then_some(())
    })
    .await;

    let mut ids = Vec::new();
    let mut path = "/admin/dead-letters?subscriber=busprobe&limit=10".to_string();
    let mut pages = 0;
    loop {
        let page = server.admin("GET", &path, "").await;
        assert_eq!(page.status, 200);
        let page = page.json();
        let letters = page["dead_letters"].as_array().unwrap();
        pages += 1;
        ids.extend(letters.iter().map(|l| l["id"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(letters.len(), 10);
                path = format!("/admin/dead-letters?subscriber=busprobe&limit=10&after={next}");
            }
            None => break,
        }
    }
    assert_eq!((pages, ids.len()), (3, 25));
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids, "each letter once, in order");

    let all = server.admin("GET", "/admin/dead-letters?limit=1000", "").await.json();
    let letters = all["dead_letters"].as_array().unwrap();
    let cut = letters.iter().find(|l| l["payload_bytes"] == 200 << 10).expect("the big letter");
    assert_eq!(
        (cut["truncated"].as_bool(), cut["payload"].as_str().map(str::len)),
        (Some(true), Some(4096))
    );
    let whole = server
        .admin("GET", &format!("/admin/dead-letters/busprobe/{}", cut["id"].as_str().unwrap()), "")
        .await;
    assert_eq!(whole.status, 200);
    let whole = whole.json();
    assert_eq!(
        (whole["truncated"].as_bool(), whole["payload"].as_str()),
        (Some(false), Some(big.as_str()))
    );
    let refused = server.admin("GET", "/admin/dead-letters?limit=many", "").await;
    assert_eq!(refused.status, 400, "{}", refused.error());
}

/// Events waiting for delivery and dead letters count against their
/// publisher's keyspace quota: a component with 1 MiB of quota publishing
/// 100 KiB poison events is refused (the bus error names the quota) before
/// its dead letters pass 1 MiB; discarding them makes room again. (A
/// component with a 1 MiB quota made 125 MiB of dead letters in 20
/// requests before.)
#[tokio::test]
async fn dead_letters_count_against_the_publishers_quota() {
    let config = config("max_attempts = 1")
        .replace("deadline_ms = 2500", "deadline_ms = 2500\nmax_keyspace_bytes = 1048576");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let payload = "p".repeat(100 << 10);
    let mut accepted = 0;
    let refusal = loop {
        assert!(accepted < 20, "20 x 100 KiB accepted under a 1 MiB quota");
        let answer = server.send("POST", "/probe/publish/probe.poison", payload.clone()).await;
        if answer.status != 200 {
            break answer;
        }
        accepted += 1;
        // Dead before the next: the backlog is all dead letters.
        eventually("the letter", Duration::from_secs(10), || async {
            let page = server.admin("GET", "/admin/dead-letters?limit=1000", "").await.json();
            (page["dead_letters"].as_array().unwrap().len() == accepted).then_some(())
        })
        .await;
    };
    assert_eq!(refusal.status, 422, "{}", refusal.error());
    assert!(refusal.error().contains("max_keyspace_bytes"), "{}", refusal.error());
    // 100 KiB and a topic each, beside the keyspace's own few bytes.
    assert!((9..=10).contains(&accepted), "{accepted} letters of 100 KiB under 1 MiB");

    let page = server.admin("GET", "/admin/dead-letters?limit=1000", "").await.json();
    for letter in page["dead_letters"].as_array().unwrap() {
        let path = format!("/admin/dead-letters/busprobe/{}", letter["id"].as_str().unwrap());
        assert_eq!(server.admin("DELETE", &path, "").await.status, 200);
    }
    let again = server.send("POST", "/probe/publish/probe.poison", payload).await;
    assert_eq!(again.status, 200, "{}", again.error());
}

/// Events go to the active version of a subscriber, never to its canary
/// (docs/admin-api.md): with a canary taking half of busprobe's requests,
/// every delivery runs in version 1.
#[tokio::test]
async fn events_go_to_the_active_version_not_the_canary() {
    let server = Server::start_with(Some(&config_with_sender("", "")), fresh_dir()).await;
    let probe = std::fs::read(test_components().join("busprobe.wasm")).unwrap();
    let canary = crate::support::rebuilt(&probe, 1);
    let deployed = server.admin("PUT", "/admin/components/busprobe?canary=50", canary).await;
    assert_eq!(deployed.status, 200, "{}", String::from_utf8_lossy(&deployed.body));
    assert_eq!(deployed.json()["version"], 2);
    let sent: Vec<String> = (0..10).map(|i| format!("to-active-{i}")).collect();
    for payload in &sent {
        let answer = server.send("POST", "/sender/publish/probe.ping", payload.clone()).await;
        assert_eq!(answer.status, 200);
    }
    wait_for_seen(&server, sent.len()).await;
    drained(&server).await;
    let log = server.log_now().await;
    let ran_in = |version: u64| {
        let span = format!("deliver{{component=busprobe version={version} ");
        log.lines().filter(|l| l.contains(&span) && l.contains("busprobe started handling")).count()
    };
    assert_eq!(ran_in(1), sent.len(), "every delivery in the active version");
    assert_eq!(ran_in(2), 0, "none in the canary");
}
