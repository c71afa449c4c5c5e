//! The message bus and atomic invocations, through the `busprobe` test
//! component: at-least-once delivery across crashes, order per topic,
//! retries and dead letters, and invocations that commit all or nothing.

use std::collections::HashSet;
use std::time::Duration;

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

/// Every delivery the probe handled, in the order it handled them.
async fn seen(server: &Server) -> Vec<Value> {
    let answer = server.get("/probe/seen").await;
    assert_eq!(answer.status, 200);
    answer.json().as_array().unwrap().clone()
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
    // A moment more: nothing arrives twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen_again = self::seen(&server).await;
    assert_eq!(seen_again.len(), sent.len(), "every event handled exactly once");
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
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let too_late = server.send("POST", "/probe/publish/probe.ping?delay=999999999999", "x").await;
    assert_eq!(too_late.status, 422);
}

/// One invocation may publish at most 100 events (README): the 101st is an
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

#[tokio::test]
async fn a_committed_event_survives_a_kill_and_is_handled_once() {
    let data = fresh_dir();
    let config = config("");
    let server = Server::start_with(Some(&config), data.clone()).await;
    // Committed, due in 1.5 s: the host dies before delivering it.
    let later = server.send("POST", "/probe/publish/probe.later?delay=1500", "later").await;
    assert_eq!(later.status, 200);
    // Committed and being handled (the handler takes 1.5 s) when the host dies.
    assert_eq!(server.send("POST", "/probe/publish/probe.ping", "slow").await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(seen(&server).await.is_empty(), "nothing handled before the kill");
    assert!(!server.stop_with("KILL").await.success());

    let server = Server::start_with(Some(&config), data).await;
    let seen = wait_for_seen(&server, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut handled = payloads(&self::seen(&server).await);
    handled.sort();
    assert_eq!(handled, ["later", "slow"], "each handled exactly once; seen: {seen:?}");
}

#[tokio::test]
async fn hot_swaps_neither_lose_nor_duplicate_events() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    let wasm = std::fs::read(test_components().join("busprobe.wasm")).unwrap();
    let mut sent = Vec::new();
    for round in 0..4 {
        for n in 0..10 {
            let payload = format!("r{round}-{n}");
            let answer = server.send("POST", "/probe/write-then/ok", payload.clone()).await;
            assert_eq!(answer.status, 200);
            sent.push(payload);
        }
        let swapped = server.admin("PUT", "/admin/components/busprobe", wasm.clone()).await;
        assert_eq!(swapped.status, 200, "{}", String::from_utf8_lossy(&swapped.body));
    }
    let seen = wait_for_seen(&server, sent.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(self::seen(&server).await.len(), sent.len(), "no duplicates");
    assert_eq!(payloads(&seen), sent, "none lost, still in order");
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
