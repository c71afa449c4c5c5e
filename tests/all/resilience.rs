//! Limits, deadlines and hostile guests: the host stays up, answers cleanly
//! and fast, and the other components never notice (breakers: `breaker.rs`).

use std::time::{Duration, Instant};

use crate::support::{Server, fresh_dir, rss_kib, test_components};

/// The trap component at `/trap` (deadline 1 s, 16 MiB of memory, `extra`
/// settings), beside the built-in user and order services.
pub fn config(extra: &str) -> String {
    format!(
        r#"
        [components.trap]
        path = "{trap}"
        deadline_ms = 1000
        max_memory = 16777216
        {extra}

        [[routes]]
        prefix = "/trap"
        component = "trap"
        [[routes]]
        prefix = "/users"
        component = "user"
        [[routes]]
        prefix = "/orders"
        component = "order"
        "#,
        trap = test_components().join("trap.wasm").display(),
    )
}

/// Each hostile guest ends in the error its misbehaviour calls for, within
/// its deadline plus a second, while another component keeps answering; and
/// host memory does not grow with the number of hostile requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_cannot_hurt_the_host() {
    // A breaker would refuse the later rounds; this test is about the guest.
    let lenient = "breaker = { consecutive_failures = 1000, min_calls = 1000 }";
    let server = Server::start_with(Some(&config(lenient)), fresh_dir()).await;
    let user = server.create_user("Rae", "rae@example.com").await;
    // (path, status, what the error must say, the longest it may take)
    let second = Duration::from_secs(1);
    let cases: &[(&str, u16, &str, Duration)] = &[
        ("/trap/loop", 504, "did not answer within 1000 ms", 2 * second),
        ("/trap/recurse", 500, "wasm trap", second),
        // The component's own max_memory (16 MiB), not the host's default.
        ("/trap/grow", 500, "memory limit of 16777216 bytes exceeded", second),
        ("/trap/alloc", 500, "memory limit of 16777216 bytes exceeded", second),
        ("/trap/huge", 502, "exceeds the limit of 1048576", second),
        // Refused by the platform at depth 8, long before any deadline.
        ("/trap/self", 508, "refused: call chain deeper than 8", second / 2),
    ];
    let mut rss_after_round = Vec::new();
    for round in 0..30 {
        for &(path, status, message, limit) in cases {
            // Past the first rounds only the fast cases: memory is what
            // those rounds measure.
            if round >= 3 && path == "/trap/loop" {
                continue;
            }
            let started = Instant::now();
            let (hostile, bystander) = tokio::join!(server.get(path), async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                server.get(&format!("/users/{user}")).await
            });
            let took = started.elapsed();
            let body = String::from_utf8_lossy(&hostile.body);
            assert_eq!(hostile.status, status, "{path}: {body}");
            assert!(hostile.error().contains(message), "{path}: {body}");
            assert!(took < limit, "{path} took {took:?}, at most {limit:?}");
            if message.starts_with("memory limit") {
                // The growth refused is the one that crosses 16 MiB, not a
                // later one (a limit enforced higher than configured).
                let wanted: u64 = hostile
                    .error()
                    .rsplit("growing to ")
                    .next()
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{path}: no size in {body}"));
                assert!(wanted > 16 << 20 && wanted <= 18 << 20, "{path}: refused at {wanted}");
            }
            assert_eq!(bystander.status, 200, "{path}: other components keep answering");
            if round == 0 {
                eprintln!("{path}: {} in {took:?}: {}", hostile.status, hostile.error());
            }
        }
        rss_after_round.push(rss_kib(server.pid()));
    }
    // Round 3 on: warm (every pool slot these cases use has been used);
    // a leak of even 1 MiB per request would add 135 MiB by round 30.
    let (warm, last) = (rss_after_round[2], rss_after_round[29]);
    eprintln!("host RSS: {warm} KiB after 3 rounds, {last} KiB after 30 (153 hostile requests)");
    assert!(last < warm + 24 * 1024, "host memory grew from {warm} KiB to {last} KiB");
    assert_eq!(server.get("/trap/ok").await.status, 200);
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431() {
    let server = Server::start().await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let send = |head: String| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = vec![0; 64];
            let n = stream.read(&mut answer).await.unwrap();
            String::from_utf8_lossy(&answer[..n]).into_owned()
        }
    };
    let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = send(format!("GET /users/x HTTP/1.1\r\nhost: a\r\n{many}\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let large = "v".repeat(512 * 1024);
    let answer = send(format!("GET /users/x HTTP/1.1\r\nhost: a\r\nx-big: {large}\r\n\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let answer = send("NOT HTTP AT ALL\r\n\r\n".to_string()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(server.get("/users/x").await.status, 404, "still serving");
}

#[tokio::test]
async fn the_bulkhead_queues_a_few_and_refuses_the_rest() {
    // A breaker that opens at the first failure it counts: a refusal is
    // load, not a failure, so the last request below still runs.
    let settings = "max_concurrency = 1\nbreaker = { consecutive_failures = 1 }";
    let server = Server::start_with(Some(&config(settings)), fresh_dir()).await;
    // The first holds the only slot for 800 ms (its deadline is 1 s). Once
    // it is in, two more arrive: with one place in the queue, one of them
    // waits for the slot and the other is refused at once, whichever
    // arrives first.
    let timed = |path: &'static str| {
        let server = &server;
        async move {
            let started = Instant::now();
            let answer = server.get(path).await;
            (answer, started.elapsed(), Instant::now())
        }
    };
    let (first, (a, b)) = tokio::join!(timed("/trap/sleep/800"), async {
        server.wait_in_flight("trap", 1.0).await; // the first call holds the slot
        tokio::join!(timed("/trap/sleep/10"), timed("/trap/sleep/11"))
    });
    let (first, _, _) = first;
    assert_eq!(first.status, 200);
    let (refused, queued) = match (a.0.status, b.0.status) {
        (200, 503) => (b, a),
        (503, 200) => (a, b),
        statuses => panic!("expected one queued (200) and one refused (503), got {statuses:?}"),
    };
    let (refused, refused_took, _) = refused;
    assert!(refused.error().contains("too many concurrent calls"), "{}", refused.error());
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused_took < Duration::from_millis(250), "refused only after {refused_took:?}");
    // Ordered on the server's side: the guest's own clock says the queued
    // call started once the first had ended (the instants at which the
    // test's tasks got their answers say nothing of when the host ran them).
    let (queued, _, _) = queued;
    let (first, queued) = (first.json(), queued.json());
    let (ended, started) =
        (first["ended_ms"].as_u64().unwrap(), queued["started_ms"].as_u64().unwrap());
    assert!(started >= ended, "the queued call ran only once the slot was free: {first} {queued}");
    assert_eq!(server.get("/trap/ok").await.status, 200, "the refusal opened no breaker");
}

/// A nested call gets what is left of its caller's deadline, not its own:
/// a callee allowed 30 s, called by a component allowed 1 s, is stopped
/// with its caller instead of computing on for 10 s.
#[tokio::test]
async fn a_nested_call_inherits_what_is_left_of_the_callers_deadline() {
    let busy = test_components().join("busy.wasm");
    let config = format!(
        "[components.caller]\npath = \"{busy}\"\ndeadline_ms = 1000\n\
         [components.busy]\npath = \"{busy}\"\ndeadline_ms = 30000\n\
         [[routes]]\nprefix = \"/caller\"\ncomponent = \"caller\"\n",
        busy = busy.display()
    );
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let started = Instant::now();
    let answer = server.get("/caller/call/busy/10000").await;
    let answered = started.elapsed();
    // The caller either reports the callee's timeout or is stopped itself;
    // both are the 1 s deadline, and within it plus the answer's margin.
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    assert!(
        (answer.status == 200 && answer.json()["outcome"] == "timed out") || answer.status == 504,
        "{} {body}",
        answer.status
    );
    assert!(answered < Duration::from_secs(2), "answered after {answered:?}: {body}");
    // And the callee is no longer computing.
    server.wait_in_flight("busy", 0.0).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the callee ran on to {:?}",
        started.elapsed()
    );
    // Stopped by the deadline it inherited, a timeout of its own that its
    // breaker counts; not merely cancelled with its caller half a second
    // later, when the gateway gives up on the caller.
    let listing = server.admin("GET", "/admin/components", "").await.json();
    let callee = listing.as_array().unwrap().iter().find(|c| c["name"] == "busy").unwrap();
    assert_eq!(callee["breaker"]["consecutive_failures"], 1, "{listing}");
}

#[tokio::test]
async fn in_flight_requests_finish_on_sigterm() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    let pid = server.pid().to_string();
    let (slow, _) = tokio::join!(server.get("/trap/sleep/800"), async {
        server.wait_in_flight("trap", 1.0).await;
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    });
    assert_eq!(slow.status, 200, "the request in flight was answered");
    assert!(server.stop_with("TERM").await.success(), "and the host exited 0");
}

/// A request that outlasts the grace period does not hold the shutdown up:
/// the host waits the grace (1 s here), drops the connection, still
/// flushes, and exits 0.
#[tokio::test]
async fn sigterm_waits_no_longer_than_the_grace_period() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let trap = test_components().join("trap.wasm");
    let config = format!(
        "[gateway]\nshutdown_grace_ms = 1000\n[components.trap]\npath = \"{}\"\n\
         deadline_ms = 30000\n[[routes]]\nprefix = \"/trap\"\ncomponent = \"trap\"\n",
        trap.display()
    );
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(b"GET /trap/sleep/20000 HTTP/1.1\r\nhost: pitstop\r\n\r\n").await.unwrap();
    server.wait_in_flight("trap", 1.0).await;
    let signalled = Instant::now();
    let pid = server.pid().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let dropped = signalled.elapsed();
    assert!(read.is_ok(), "the connection was not dropped after the grace period");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    let mut server = server;
    let status = server.wait_for_exit(Duration::from_secs(10)).await;
    let exited = signalled.elapsed();
    let log = server.log();
    assert!(status.success(), "{status}");
    assert!(dropped >= Duration::from_millis(900), "dropped after {dropped:?}, before the grace");
    assert!(exited < Duration::from_secs(4), "exited {exited:?} after SIGTERM");
    assert!(log.contains("shutdown grace period over"), "{log}");
}

#[tokio::test]
async fn a_client_that_sends_its_head_too_slowly_is_cut_off() {
    let server =
        Server::start_with(Some("[gateway]\nheader_read_timeout_ms = 300\n"), fresh_dir()).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /users/x HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    // The server closes (possibly after a 408) instead of waiting for ever.
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.get("/users/x").await.status, 404, "still serving others");
}

#[tokio::test]
async fn keyvalue_quotas_come_back_to_the_guest_as_errors() {
    let limit = "max_keyspace_bytes = 1000";
    let config = crate::support::single_component_config("probe", "kvprobe", limit, "/p");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    assert_eq!(server.send("PUT", "/p/kv/k1", "x".repeat(600)).await.status, 200);
    let over = server.send("PUT", "/p/kv/k2", "x".repeat(600)).await;
    assert_eq!(over.status, 507);
    assert!(over.error().contains("quota exceeded"), "{}", over.error());
    assert_eq!(server.get("/p/kv/k2").await.status, 404, "nothing was written");
    // Shrinking frees room.
    assert_eq!(server.send("PUT", "/p/kv/k1", "x".repeat(100)).await.status, 200);
    assert_eq!(server.send("PUT", "/p/kv/k2", "x".repeat(600)).await.status, 200);
    let long_key = "k".repeat(600);
    // A key the platform refuses is the request's fault (the SDK says 400).
    let invalid = server.send("PUT", &format!("/p/kv/{long_key}"), "v").await;
    assert_eq!(invalid.status, 400);
    assert!(invalid.error().contains("invalid key"), "{}", invalid.error());
    // Within 19 bytes of the quota a counter that keeps its length can
    // still count (it used to be sized as 20 digits before its commit).
    assert_eq!(server.send("POST", "/p/incr/c", "").await.status, 200); // 706 bytes
    assert_eq!(server.send("PUT", "/p/kv/k3", "x".repeat(287)).await.status, 200); // 995
    let counted = server.send("POST", "/p/incr/c", "").await;
    assert_eq!(counted.status, 200, "{}", String::from_utf8_lossy(&counted.body));
    assert_eq!(&server.get("/p/kv/c").await.body[..], b"2");
}

/// One invocation cannot write past its keyspace's quota by writing many
/// values before it commits (each `set` used to be checked against the
/// committed bytes only: 600 sets of 1 MiB all landed in a 256 MiB
/// keyspace), nor hold more than `max_write_set_bytes` of writes in memory.
#[tokio::test]
async fn one_invocation_cannot_write_past_its_quota_or_its_write_set() {
    let limits = "max_keyspace_bytes = 10485760\nmax_write_set_bytes = 4194304";
    let config = crate::support::single_component_config("probe", "kvprobe", limits, "/p");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    // 5 MiB in one invocation: over the write set, though within the quota.
    let over_set = server.send("POST", "/p/fill/a/5/1024", "").await;
    assert_eq!(over_set.status, 507, "{}", String::from_utf8_lossy(&over_set.body));
    assert!(over_set.error().contains("max_write_set_bytes"), "{}", over_set.error());
    assert_eq!(server.get("/p/kv/a-0").await.status, 404, "nothing was written");
    // Two invocations of ~4 MiB each fit: 8,380,440 of 10,485,760 bytes.
    for tag in ["b", "c"] {
        let fill = server.send("POST", &format!("/p/fill/{tag}/4/1023"), "").await;
        assert_eq!(fill.status, 200, "{}", String::from_utf8_lossy(&fill.body));
    }
    // A third would take the keyspace over its quota at its third value,
    // although each value alone would fit beside what is committed.
    let over_quota = server.send("POST", "/p/fill/d/4/1023", "").await;
    assert_eq!(over_quota.status, 507, "{}", String::from_utf8_lossy(&over_quota.body));
    assert!(over_quota.error().contains("its quota is 10485760"), "{}", over_quota.error());
    assert_eq!(server.get("/p/kv/d-0").await.status, 404, "nothing was written");
    // Rewriting what is there does not grow the keyspace: still allowed.
    assert_eq!(server.send("POST", "/p/fill/b/4/1023", "").await.status, 200);
    assert_eq!(server.get("/p/kv/c-3").await.body.len(), 1023 * 1024);
    // Empty values still cost memory until the commit: 100,000 of them are
    // refused (each key and its bookkeeping count), not held by the host.
    let empties = server.send("POST", "/p/fill/e/100000/0", "").await;
    assert_eq!(empties.status, 507, "{}", String::from_utf8_lossy(&empties.body));
    assert!(empties.error().contains("max_write_set_bytes"), "{}", empties.error());
    // A full keyspace is not a broken component: more refusals than open a
    // breaker (5 in a row), and it still serves.
    for _ in 0..6 {
        assert_eq!(server.send("POST", "/p/fill/f/4/1023", "").await.status, 507);
    }
    assert_eq!(server.get("/p/kv/b-0").await.status, 200, "the breaker stayed closed");
}

/// An over-long id is the client's mistake: every built-in service answers
/// it with a 4xx, never a 5xx, so no client (no token needed for a read) can
/// open a service's circuit breaker and switch it off for everyone.
#[tokio::test]
async fn overlong_ids_are_client_errors_and_cannot_open_a_breaker() {
    let server = Server::start().await;
    let long = "x".repeat(600);
    let paths = [
        format!("/users/{long}"),
        format!("/orders/{long}"),
        format!("/payments/{long}"),
        format!("/payments?order_id={long}"),
    ];
    // More than the 5 consecutive failures that open a breaker.
    for _ in 0..6 {
        for path in &paths {
            let answer = server.get(path).await;
            assert!(
                matches!(answer.status, 400 | 404),
                "{}: {} {}",
                &path[..12],
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    server.create_user("Ida", "ida@example.com").await;
    let ready = server.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", String::from_utf8_lossy(&ready.body));
}

/// A full instance pool answers 503 with `Retry-After` (docs/services.md),
/// and the component serves again as soon as an instance ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_answers_503_with_retry_after() {
    // A breaker that opens at the first failure it counts: a full pool is
    // load, not the component failing.
    let trap = config("breaker = { consecutive_failures = 1 }");
    let config = format!("[runtime]\nmax_instances = 2\n{trap}");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let made = r#"pitstop_instantiation_duration_seconds_count{component="trap"}"#;
    let slow = futures::future::join_all((0..2).map(|_| server.get("/trap/sleep/600")));
    let (slow, full) = tokio::join!(slow, async {
        // Both slots are taken once both instances exist.
        crate::support::eventually("two instances", Duration::from_secs(5), || async {
            (server.metric(made).await == 2.0).then_some(())
        })
        .await;
        server.get("/trap/ok").await
    });
    assert_eq!(full.status, 503, "{}", String::from_utf8_lossy(&full.body));
    assert_eq!(full.header("retry-after"), Some("1"));
    assert!(full.error().contains("instance"), "{}", full.error());
    for answer in slow {
        assert_eq!(answer.status, 200, "the requests holding the pool were served");
    }
    assert_eq!(server.get("/trap/ok").await.status, 200, "a slot is free, and no breaker open");
}
