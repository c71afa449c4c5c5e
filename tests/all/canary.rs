//! Canary deployments: a new version takes a share of a component's
//! requests, sticky per client; it is promoted, rolled back, or judged by
//! the platform, and survives a restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pitstop_host::runtime::canary::takes;
use serde_json::Value;

use crate::support::{Answer, Server, fresh_dir, test_components};

fn wasm(name: &str) -> String {
    test_components().join(format!("{name}.wasm")).display().to_string()
}

fn succeeded(output: std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A GET by client `client`, without a token: a token's subject would keep
/// every request on one side (a read that brings one is made as its
/// subject).
async fn as_client(server: &Server, path: &str, client: &str) -> Answer {
    server.send_raw("GET", path, &[("x-client-id", client)], "").await
}

fn version(answer: &Answer) -> u64 {
    answer.header("pitstop-version").and_then(|v| v.parse().ok()).expect("a component answered")
}

/// Clients `client-0` to `client-19` all land on `version`.
async fn assert_every_client_on(server: &Server, version_number: u64) {
    for client in 0..20 {
        let answer = as_client(server, "/greet/ok", &format!("client-{client}")).await;
        assert_eq!(version(&answer), version_number, "client-{client}");
    }
}

async fn listing(server: &Server, name: &str) -> Value {
    let list = server.admin("GET", "/admin/components", "").await.json();
    list.as_array().unwrap().iter().find(|c| c["name"] == name).cloned().expect(name)
}

#[tokio::test]
async fn a_canary_takes_its_share_sticky_per_client_until_promoted_or_rolled_back() {
    let data = fresh_dir();
    let server = Server::start_with(None, data.clone()).await;
    succeeded(server.cli(&["deploy", "greet", &wasm("hello"), "--route", "/greet"]));
    let out = succeeded(server.cli(&["deploy", "greet", &wasm("flaky"), "--canary", "30"]));
    assert_eq!(out, "deployed greet version 2 as a canary taking 30% of the requests");

    // Each client stays on its side; about 30% of clients are on the canary.
    let mut sides = BTreeMap::new();
    for client in 0..200 {
        let answer = as_client(&server, "/greet/ok", &format!("client-{client}")).await;
        assert_eq!(answer.status, 200);
        sides.insert(client, version(&answer));
    }
    // Exactly the clients the split puts there (its closeness to 30% over
    // many keys is the unit test's): a key names one side for good.
    let split = |client| takes(2, 30, Some(&format!("client-{client}")));
    let expected: BTreeMap<_, _> = (0..200).map(|c| (c, if split(c) { 2 } else { 1 })).collect();
    assert_eq!(sides, expected, "each client on the side the split names");
    let on_canary = sides.values().filter(|v| **v == 2).count();
    for client in [0, 1, 2, 3] {
        for _ in 0..5 {
            let answer = as_client(&server, "/greet/ok", &format!("client-{client}")).await;
            assert_eq!(version(&answer), sides[&client], "client-{client} stays on its side");
        }
    }

    // A verified subject keeps its side too: writes need the server's token
    // (subject "tester"), and reads without a client key land at random.
    let first = version(&server.send("POST", "/greet/ok", "").await);
    for _ in 0..10 {
        let answer = server.send("POST", "/greet/ok", "").await;
        assert_eq!(version(&answer), first, "tester stays on its side");
    }
    let anonymous: std::collections::BTreeSet<u64> =
        futures::future::join_all((0..40).map(|_| server.send_raw("GET", "/greet/ok", &[], "")))
            .await
            .iter()
            .map(version)
            .collect();
    assert_eq!(anonymous.len(), 2, "without a key, requests land on both sides");

    // Each version's traffic: in the listing, the table and /metrics.
    let greet = listing(&server, "greet").await;
    assert_eq!(
        (greet["version"].as_u64(), greet["canary"]["version"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(greet["canary"]["percent"], 30);
    assert!(greet["canary"]["traffic"]["requests"].as_u64().unwrap() >= on_canary as u64);
    assert!(greet["traffic"]["requests"].as_u64().unwrap() >= (200 - on_canary) as u64);
    let table = succeeded(server.cli(&["components"]));
    assert!(table.lines().any(|l| l.starts_with("greet ") && l.contains("v2 at 30%")), "{table}");
    let ok_on_canary = server
        .metric("pitstop_version_requests_total{component=\"greet\",version=\"2\",outcome=\"ok\"}")
        .await;
    assert!(ok_on_canary >= on_canary as f64, "{ok_on_canary}");

    // It survives a restart, then is promoted: everyone on version 2.
    assert!(server.stop_with("TERM").await.success());
    let server = Server::start_with(None, data).await;
    let canary_client = sides.iter().find(|(_, v)| **v == 2).map(|(c, _)| *c).unwrap();
    let answer = as_client(&server, "/greet/ok", &format!("client-{canary_client}")).await;
    assert_eq!(version(&answer), 2, "the canary serves its clients after a restart");
    assert_eq!(succeeded(server.cli(&["promote", "greet"])), "greet version 2 is active");
    assert_every_client_on(&server, 2).await;
    assert_eq!(listing(&server, "greet").await["last_canary"]["outcome"], "promoted");

    // A new canary, rolled back: everyone on version 2 again.
    succeeded(server.cli(&["deploy", "greet", &wasm("hello"), "--canary", "50"]));
    assert_eq!(succeeded(server.cli(&["rollback", "greet"])), "greet rolled back to version 2");
    assert_every_client_on(&server, 2).await;
    let greet = listing(&server, "greet").await;
    assert!(greet["canary"].is_null(), "{greet}");
    assert_eq!(
        (greet["last_canary"]["version"].as_u64(), greet["last_canary"]["outcome"].as_str()),
        (Some(3), Some("rolled back"))
    );

    // A rollback never goes back to a withdrawn canary: v3 was rolled back,
    // v4 promoted; rolling v4 back gives v2.
    succeeded(server.cli(&["deploy", "greet", &wasm("hello"), "--canary", "50"]));
    assert_eq!(succeeded(server.cli(&["promote", "greet"])), "greet version 4 is active");
    assert_eq!(succeeded(server.cli(&["rollback", "greet"])), "greet rolled back to version 2");
}

#[tokio::test]
async fn bad_canary_requests_are_refused_with_a_reason() {
    let server = Server::start().await;
    let hello = wasm("hello");
    for (query, status, message) in [
        ("canary=0", 400, "1 to 99 percent"),
        ("canary=100", 400, "1 to 99 percent"),
        ("canary=ten", 400, "a percentage from 1 to 99"),
        ("auto_rollback=true", 400, "auto_rollback needs canary"),
        ("canary=10&route=/elsewhere", 400, "deploy without route"),
        ("canary=10&auto_rollback=maybe", 400, "true or false"),
    ] {
        let bytes = std::fs::read(&hello).unwrap();
        let answer = server.admin("PUT", &format!("/admin/components/user?{query}"), bytes).await;
        assert_eq!(answer.status, status, "{query}: {:?}", answer.body);
        assert!(answer.error().contains(message), "{query}: {}", answer.error());
    }
    let bytes = std::fs::read(&hello).unwrap();
    let fresh = server.admin("PUT", "/admin/components/newcomer?canary=10", bytes).await;
    assert_eq!(fresh.status, 409, "nothing active to run beside");
    let promote = server.admin("POST", "/admin/components/user/promote", "").await;
    assert_eq!(promote.status, 409);
    assert!(promote.error().contains("no canary"), "{}", promote.error());
    let refused = server.cli(&["deploy", "user", &hello, "--canary", "0"]);
    assert!(!refused.status.success());
    let refused = server.cli(&["deploy", "user", &hello, "--auto-rollback"]);
    assert!(!refused.status.success(), "--auto-rollback needs --canary");
    assert_eq!(server.get("/users/usr_nobody").await.status, 404, "user untouched");
}

/// A canary failing 30% of its requests is rolled back by the platform
/// within its window while the clients of the active version see no
/// error at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_on_its_own() {
    let config = "[canary]\nmin_requests = 20\nmax_error_rate = 0.1\n";
    let server = Server::start_with(Some(config), fresh_dir()).await;
    succeeded(server.cli(&["deploy", "greet", &wasm("hello"), "--route", "/greet"]));
    let out = succeeded(server.cli(&[
        "deploy",
        "greet",
        &wasm("flaky"),
        "--canary",
        "50",
        "--auto-rollback",
    ]));
    assert!(out.ends_with("judged by the platform"), "{out}");
    let started = Instant::now();
    let (mut active_errors, mut canary_errors, mut after) = (0, 0, 0);
    let mut rolled_back = None;
    for request in 0..2000 {
        let answer = as_client(&server, "/greet/x", &format!("client-{request}")).await;
        match (version(&answer), answer.status) {
            (1, 200) => {}
            (1, _) => active_errors += 1,
            (2, 500) => canary_errors += 1,
            (2, _) => {}
            (other, _) => panic!("version {other}"),
        }
        if rolled_back.is_some() {
            assert_eq!(version(&answer), 1, "after the rollback everything is version 1");
            after += 1;
            if after == 50 {
                break;
            }
        } else if request % 10 == 9 && listing(&server, "greet").await["canary"].is_null() {
            rolled_back = Some(started.elapsed());
        }
    }
    let took = rolled_back.expect("the canary was rolled back");
    assert!(took < Duration::from_secs(5), "rolled back after {took:?}");
    assert_eq!(active_errors, 0, "clients of the active version saw no error");
    assert!(canary_errors > 0);
    let last = &listing(&server, "greet").await["last_canary"];
    assert_eq!(last["outcome"], "rolled back", "{last}");
    assert!(last["reason"].as_str().unwrap().contains("error rate"), "{last}");
    assert!(server.log().contains("canary rolled back"), "logged, with why");
}

/// With `promote_after_requests`, a canary that does well becomes the
/// active version on its own.
#[tokio::test]
async fn a_good_canary_is_promoted_on_its_own() {
    let config = "[canary]\nmin_requests = 5\npromote_after_requests = 10\n";
    let server = Server::start_with(Some(config), fresh_dir()).await;
    succeeded(server.cli(&["deploy", "greet", &wasm("hello"), "--route", "/greet"]));
    let canary = ["deploy", "greet", &wasm("flaky"), "--canary", "50", "--auto-rollback"];
    succeeded(server.cli(&canary));
    let started = Instant::now();
    let mut request = 0;
    while listing(&server, "greet").await["version"] != 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "not promoted");
        for _ in 0..10 {
            request += 1;
            assert_eq!(as_client(&server, "/greet/ok", &format!("c{request}")).await.status, 200);
        }
    }
    let greet = listing(&server, "greet").await;
    assert!(greet["canary"].is_null(), "{greet}");
    assert_eq!(greet["last_canary"]["outcome"], "promoted", "{greet}");
    assert_eq!(version(&as_client(&server, "/greet/ok", "anyone").await), 2);
}

#[test]
fn bad_canary_thresholds_stop_serve_with_a_message() {
    let stderr = crate::support::serve_refuses("[canary]\nmax_error_rate = 2\n");
    assert!(stderr.contains("[canary] max_error_rate must be within 0 and 1"), "{stderr}");
    let stderr = crate::support::serve_refuses("[canary]\nmin_requests = -1\n");
    assert!(stderr.contains("min_requests"), "{stderr}");
}

/// The judge does not wait for a name being changed: while one component's
/// deploy takes seconds (a `declare` that never returns, refused at its
/// deadline), another component's failing canary is still rolled back
/// within its window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_deploy_of_one_name_holds_up_no_other_canarys_verdict() {
    let config = "[canary]\nmin_requests = 20\nmax_error_rate = 0.1\n";
    let server = Server::start_with(Some(config), fresh_dir()).await;
    for name in ["greet", "other"] {
        succeeded(server.cli(&["deploy", name, &wasm("hello"), "--route", &format!("/{name}")]));
        let canary = ["deploy", name, &wasm("flaky"), "--canary", "50", "--auto-rollback"];
        succeeded(server.cli(&canary));
    }
    // `other` is being changed for seconds: its lock is held from the
    // upload until the refusal, and its `declare` runs once it is compiled.
    let compiled = move |log: String| {
        log.lines().filter(|l| l.contains("compiled component") && !l.contains("loaded")).count()
    };
    let before = compiled(server.log());
    let (admin, data) = (server.admin_base.clone(), server.data_dir());
    let slow = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
            .args(["deploy", "other", &wasm("slow_declare"), "--admin-url", &admin, "--data-dir"])
            .arg(data)
            .env_remove("PITSTOP_ADMIN_TOKEN")
            .output()
            .unwrap()
    });
    crate::support::eventually("slow_declare compiled", Duration::from_secs(20), || {
        let done = compiled(server.log()) > before;
        async move { done.then_some(()) }
    })
    .await;
    // Both canaries fail; only greet's lock is free.
    let started = Instant::now();
    let mut request = 0;
    while !listing(&server, "greet").await["canary"].is_null() {
        assert!(started.elapsed() < Duration::from_secs(10), "greet's canary was not rolled back");
        for path in ["/greet/x", "/other/x"] {
            for _ in 0..10 {
                request += 1;
                as_client(&server, path, &format!("c{request}")).await;
            }
        }
    }
    let took = started.elapsed();
    assert!(!slow.is_finished(), "other's deploy was still running when greet's verdict came");
    assert!(took < Duration::from_millis(1500), "greet's canary rolled back after {took:?}");
    assert!(!slow.join().unwrap().status.success(), "the slow deploy is refused");
}

/// An anonymous client cannot get a bad canary promoted by opening the
/// active version's circuit breaker: a handful of failing requests open it,
/// and its refusals (503s the version never ran) used to count as the
/// active version's failures, so a canary failing 30% of real requests
/// looked better than the active version and was promoted while users saw
/// mostly errors. Refusals count for neither version, and the few failures
/// that opened the breaker are too few requests to excuse the canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_the_active_versions_breaker_does_not_get_a_bad_canary_promoted() {
    let config =
        "[canary]\nmin_requests = 20\nmax_error_rate = 0.1\npromote_after_requests = 120\n";
    let server = Server::start_with(Some(config), fresh_dir()).await;
    succeeded(server.cli(&["deploy", "trap", &wasm("trap"), "--route", "/trap"]));
    let canary = ["deploy", "trap", &wasm("flaky"), "--canary", "50", "--auto-rollback"];
    succeeded(server.cli(&canary));
    let active_breaker = || async { listing(&server, "trap").await["breaker"]["state"].clone() };

    // The attacker: anonymous requests (no token, no client key, so each
    // lands at random) that make the active version trap, until its
    // breaker opens (5 in a row with the default settings).
    let mut attack = 0;
    while active_breaker().await != "open" {
        attack += 1;
        assert!(attack <= 100, "the active version's breaker did not open");
        let answer = server.send_raw("GET", "/trap/panic", &[], "").await;
        assert!(matches!(answer.status, 200 | 500), "{}", answer.status);
    }

    // Users: each request of the active version's side is refused while
    // its breaker is open; the canary fails 30% of its requests. They go
    // on until the judge reaches a verdict (every 250 ms, later on a busy
    // machine).
    let (mut refused, mut canary_failed) = (0, 0);
    let (started, mut request) = (Instant::now(), 0);
    while !listing(&server, "trap").await["canary"].is_null() {
        if started.elapsed() > Duration::from_secs(20) {
            let log = server.log();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("request failed")).collect();
            panic!(
                "no verdict on the canary: {}\n{}",
                listing(&server, "trap").await,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        for _ in 0..10 {
            request += 1;
            let answer = as_client(&server, "/trap/count", &format!("user-{request}")).await;
            match answer.status {
                503 => refused += 1,
                500 => canary_failed += 1,
                200 => {}
                other => panic!("status {other}"),
            }
        }
    }
    let trap = listing(&server, "trap").await;
    assert!(refused > 0 && canary_failed > 0, "{refused} refused, {canary_failed} failed");
    assert!(trap["canary"].is_null(), "the canary is still running: {trap}");
    assert_eq!(trap["last_canary"]["outcome"], "rolled back", "{trap}");
    assert_eq!(trap["version"], 1, "{trap}");
    let refusals =
        r#"pitstop_version_requests_total{component="trap",version="1",outcome="refused"}"#;
    assert!(server.metric(refusals).await > 0.0, "refusals are still counted, apart");
}

/// A canary that fails every request opens its breaker after a few; its
/// share then goes to the active version, and its refusals are not its
/// failures. It is still rolled back at once on the few requests it
/// served, instead of waiting for `min_requests` one probe per open period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_breaker_opens_is_judged_on_the_requests_it_served() {
    let config = "[canary]\nmin_requests = 20\nmax_error_rate = 0.1\n";
    let server = Server::start_with(Some(config), fresh_dir()).await;
    succeeded(server.cli(&["deploy", "trap", &wasm("hello"), "--route", "/trap"]));
    let canary = ["deploy", "trap", &wasm("trap"), "--canary", "50", "--auto-rollback"];
    succeeded(server.cli(&canary));
    let (started, mut request) = (Instant::now(), 0);
    while !listing(&server, "trap").await["canary"].is_null() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the canary was not rolled back: {}",
            listing(&server, "trap").await
        );
        for _ in 0..10 {
            request += 1;
            let answer = as_client(&server, "/trap/panic", &format!("user-{request}")).await;
            assert!(matches!(answer.status, 200 | 500), "{}", answer.status);
        }
    }
    let last = &listing(&server, "trap").await["last_canary"];
    assert_eq!(last["outcome"], "rolled back", "{last}");
}

/// What ends a canary besides a verdict (docs/admin-api.md): a new
/// `--canary` deploy replaces it, a plain deploy ends it (`replaced`), an
/// undeploy too; each canary that ended unpromoted is withdrawn, and every
/// client is on the active version again.
#[tokio::test]
async fn a_canary_ends_with_a_new_canary_a_plain_deploy_or_an_undeploy() {
    let server = Server::start_with(None, fresh_dir()).await;
    let hello = std::fs::read(test_components().join("hello.wasm")).unwrap();
    let builds = tempfile::TempDir::new().unwrap();
    let build = |n: u8| {
        let path = builds.path().join(format!("hello-{n}.wasm"));
        std::fs::write(&path, crate::support::rebuilt(&hello, n)).unwrap();
        path.display().to_string()
    };
    let (first, second, third, fourth) = (build(1), build(2), build(3), build(4));
    let deploy = |path: &str, canary: bool| {
        let args = ["deploy", "greet", path, "--canary", "50"];
        succeeded(server.cli(if canary { &args[..] } else { &args[..3] }))
    };
    succeeded(server.cli(&["deploy", "greet", &wasm("hello"), "--route", "/greet"]));
    let ended = |greet: &Value| {
        (greet["last_canary"]["version"].as_u64(), greet["last_canary"]["outcome"].clone())
    };

    deploy(&first, true); // version 2
    deploy(&second, true); // version 3 replaces it
    let greet = listing(&server, "greet").await;
    assert_eq!(greet["canary"]["version"], 3, "{greet}");
    assert_eq!(ended(&greet), (Some(2), Value::from("replaced")), "{greet}");

    deploy(&third, false); // version 4, active: the canary ends
    let greet = listing(&server, "greet").await;
    assert!(greet["canary"].is_null(), "{greet}");
    assert_eq!(greet["version"], 4, "{greet}");
    assert_eq!(ended(&greet), (Some(3), Value::from("replaced")), "{greet}");
    assert_every_client_on(&server, 4).await;

    deploy(&fourth, true); // version 5
    assert_eq!(server.admin("DELETE", "/admin/components/greet", "").await.status, 200);
    let versions = server.admin("GET", "/admin/components/greet/versions", "").await.json();
    let withdrawn: Vec<u64> = (versions["versions"].as_array().unwrap().iter())
        .filter(|v| v["withdrawn"] == true)
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(withdrawn, [2, 3, 5], "the canaries that ended unpromoted: {versions}");
    assert!(versions["active"].is_null(), "{versions}");
    // Served again, the name has no canary: its active version takes all.
    let activated = server.admin("POST", "/admin/components/greet/versions/4/activate", "").await;
    assert_eq!(activated.status, 200, "{}", String::from_utf8_lossy(&activated.body));
    let greet = listing(&server, "greet").await;
    assert!(greet["canary"].is_null(), "{greet}");
    assert_every_client_on(&server, 4).await;
}

/// A canary slower than `max_p99_ms` and than the active version is rolled
/// back on its own, the latency named as the reason (docs/configuration.md).
#[tokio::test]
async fn a_slow_canary_is_rolled_back_on_its_own() {
    let config = "[canary]\nmin_requests = 10\nmax_p99_ms = 20\n";
    let server = Server::start_with(Some(config), fresh_dir()).await;
    succeeded(server.cli(&["deploy", "greet", &wasm("hello"), "--route", "/greet"]));
    // The busy component at the same route holds each answer 60 ms; hello
    // answers at once.
    let canary = ["deploy", "greet", &wasm("busy"), "--canary", "50", "--auto-rollback"];
    succeeded(server.cli(&canary));
    let started = Instant::now();
    let mut request = 0;
    while !listing(&server, "greet").await["canary"].is_null() {
        assert!(started.elapsed() < Duration::from_secs(20), "the slow canary was not rolled back");
        for _ in 0..10 {
            request += 1;
            let answer = as_client(&server, "/greet/touch/1?hold=60", &format!("c{request}")).await;
            assert_eq!(answer.status, 200, "slow, not failing");
        }
    }
    let last = &listing(&server, "greet").await["last_canary"];
    assert_eq!(last["outcome"], "rolled back", "{last}");
    assert!(last["reason"].as_str().unwrap().contains("p99 latency"), "{last}");
}

/// With `promote_after_ms`, a canary that does well is promoted once that
/// long went by, and not before.
#[tokio::test]
async fn a_good_canary_is_promoted_after_its_time() {
    let config = "[canary]\nmin_requests = 5\npromote_after_ms = 1500\n";
    let server = Server::start_with(Some(config), fresh_dir()).await;
    succeeded(server.cli(&["deploy", "greet", &wasm("hello"), "--route", "/greet"]));
    let canary = ["deploy", "greet", &wasm("flaky"), "--canary", "50", "--auto-rollback"];
    let started = Instant::now();
    succeeded(server.cli(&canary));
    let mut request = 0;
    while listing(&server, "greet").await["version"] != 2 {
        assert!(started.elapsed() < Duration::from_secs(15), "not promoted");
        for _ in 0..10 {
            request += 1;
            assert_eq!(as_client(&server, "/greet/ok", &format!("c{request}")).await.status, 200);
        }
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500), "promoted after {took:?}, before its time");
    let greet = listing(&server, "greet").await;
    assert_eq!(greet["last_canary"]["outcome"], "promoted", "{greet}");
}

/// A canary that cannot be loaded at a restart (its bytes and compiled
/// artifact gone) ends as `lost at restart`, and the active version serves
/// every client (docs/admin-api.md).
#[tokio::test]
async fn a_canary_that_cannot_be_loaded_at_a_restart_ends_as_lost() {
    let data = fresh_dir();
    let server = Server::start_with(None, data.clone()).await;
    succeeded(server.cli(&["deploy", "greet", &wasm("hello"), "--route", "/greet"]));
    succeeded(server.cli(&["deploy", "greet", &wasm("flaky"), "--canary", "50"]));
    let versions = server.admin("GET", "/admin/components/greet/versions", "").await.json();
    let digest = versions["versions"][1]["digest"].as_str().unwrap().to_string();
    let dir = server.data_dir();
    assert!(server.stop_with("TERM").await.success());
    let mut removed = 0;
    for folder in ["components", "cache"] {
        for entry in std::fs::read_dir(dir.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with(&digest) {
                std::fs::remove_file(path).unwrap();
                removed += 1;
            }
        }
    }
    assert!(removed >= 2, "the canary's bytes and artifact: {removed} files");

    let server = Server::start_with(None, data).await;
    let greet = listing(&server, "greet").await;
    assert!(greet["canary"].is_null(), "{greet}");
    assert_eq!(greet["last_canary"]["outcome"], "lost at restart", "{greet}");
    assert_every_client_on(&server, 1).await;
}

/// `services` calls split like requests (docs/admin-api.md): a call made
/// while serving a client lands on the side of the callee's canary that
/// the client's own requests land on. The canary here is another component
/// (hello), so an answer says which side served it.
#[tokio::test]
async fn services_calls_split_across_a_canary_as_their_client_does() {
    let kvprobe = test_components().join("kvprobe.wasm").display().to_string();
    let config = format!(
        "[components.caller]\npath = \"{kvprobe}\"\n[components.target]\npath = \"{kvprobe}\"\n\
         [[routes]]\nprefix = \"/p\"\ncomponent = \"caller\"\n\
         [[routes]]\nprefix = \"/t\"\ncomponent = \"target\"\n"
    );
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let hello = std::fs::read(test_components().join("hello.wasm")).unwrap();
    let canary = server.admin("PUT", "/admin/components/target?canary=50", hello).await;
    assert_eq!(canary.status, 200, "{}", String::from_utf8_lossy(&canary.body));
    let mut sides = std::collections::BTreeSet::new();
    for n in 0..20 {
        let sub = format!("subject-{n}");
        let minted = server.admin("POST", "/admin/tokens", json_body(&sub)).await;
        assert_eq!(minted.status, 200, "{}", String::from_utf8_lossy(&minted.body));
        let token = minted.json()["token"].as_str().unwrap().to_string();
        let direct = server.send_as(Some(&token), "GET", "/t/p/headers", "").await;
        let side = version(&direct);
        let relayed = server.send_as(Some(&token), "GET", "/p/relay/target", "").await;
        assert_eq!(relayed.status, 200, "{}", String::from_utf8_lossy(&relayed.body));
        let by_canary = String::from_utf8_lossy(&relayed.body).contains("hello");
        assert_eq!(by_canary, side == 2, "{sub}: its requests on version {side}");
        sides.insert(side);
    }
    assert_eq!(sides.len(), 2, "20 subjects land on both sides");
}

fn json_body(sub: &str) -> String {
    serde_json::json!({ "sub": sub }).to_string()
}
