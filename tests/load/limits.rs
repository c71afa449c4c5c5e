//! The limits act under load: the bulkhead refuses at once beyond its queue,
//! a deadline counts from the request's arrival (waiting for a turn
//! included), and a `services` caller sees a full or slow callee as
//! `unavailable` or `timeout`, as the gateway would.

use std::time::{Duration, Instant};

use crate::probe::concurrently;
use crate::{GRACE, alone, config, start, tally};

/// "At once": a refusal must not wait for anything.
const AT_ONCE: Duration = Duration::from_millis(250);

/// Two admitted (one executing), two queued, six refused at once with
/// `Retry-After`; the four that got in run out of time and get 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulkhead_refuses_beyond_its_queue_at_once() {
    let _alone = alone().await;
    let settings = "max_concurrency = 2\nmax_parallel = 1\ndeadline_ms = 2000";
    let (server, _) = start(&config(settings, ""), &[]).await;
    let answers = concurrently(10, || server.get("/busy/burn/3000")).await;
    println!("10 x GET /busy/burn/3000 with 2 admitted, 1 executing: {}", tally(&answers));
    let (refused, admitted): (Vec<_>, Vec<_>) =
        answers.iter().partition(|(answer, _)| answer.status == 503);
    assert_eq!(refused.len(), 6, "{}", tally(&answers));
    for (answer, took) in refused {
        assert!(*took <= AT_ONCE, "refused only after {took:?}");
        assert!(answer.header("retry-after").is_some(), "503 without Retry-After");
        assert!(answer.error().contains("too many concurrent calls"), "{}", answer.error());
    }
    for (answer, took) in admitted {
        assert_eq!(answer.status, 504, "{}", String::from_utf8_lossy(&answer.body));
        let limit = Duration::from_secs(2) + GRACE;
        assert!(*took <= limit, "a 504 after {took:?}, deadline 2 s");
    }
}

/// One at a time, 1.5 s each, deadline 2 s: the first is served; the second
/// starts at 1.5 s and the third never starts, and both get their 504 at
/// 2 s from their arrival, not 2 s from when they got a turn (3.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_count_from_arrival() {
    let _alone = alone().await;
    let (server, _) = start(&config("max_parallel = 1\ndeadline_ms = 2000", ""), &[]).await;
    let answers = concurrently(3, || server.get("/busy/burn/1500")).await;
    println!("3 x GET /busy/burn/1500, one at a time, deadline 2 s: {}", tally(&answers));
    let served = answers.iter().filter(|(answer, _)| answer.status == 200).count();
    assert_eq!(served, 1, "{}", tally(&answers));
    for (answer, took) in answers.iter().filter(|(answer, _)| answer.status != 200) {
        assert_eq!(answer.status, 504, "{}", String::from_utf8_lossy(&answer.body));
        assert!(*took <= Duration::from_secs(3), "a 504 after {took:?}, deadline 2 s");
    }
}

/// The same `busy.wasm` as a second component, `caller`, at `/caller` (the
/// guest ignores its first path segment), calling `busy` through `services`.
const CALLER: &str = r#"
    [components.caller]
    path = "{busy}"
    deadline_ms = 3000
    [[routes]]
    prefix = "/caller"
    component = "caller"
"#;

/// With busy's one slot and its one queue place taken, a call is refused
/// at once: `unavailable`. Queued behind a request that holds the slot
/// until its deadline, then given its turn, a call gets `timeout` at its
/// own deadline. Either way the caller hears in time to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_callers_see_a_full_or_slow_callee_as_unavailable_or_timeout() {
    let _alone = alone().await;
    let busy = "max_concurrency = 1\nmax_parallel = 1\ndeadline_ms = 1000";
    let caller = CALLER.replace("{busy}", &crate::busy_wasm().display().to_string());
    let (server, _) = start(&config(busy, &caller), &[]).await;

    // Slot and queue held until busy's deadline, 1 s.
    let (held, (called, took)) = tokio::join!(concurrently(2, || server.get("/busy/burn/3000")), {
        let server = &server;
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let sent = Instant::now();
            (server.get("/caller/call/busy/100").await, sent.elapsed())
        }
    });
    println!("busy full: {}; caller answered in {took:?}: {}", tally(&held), called.json());
    assert_eq!(called.status, 200, "{}", String::from_utf8_lossy(&called.body));
    let outcome = called.json()["outcome"].as_str().unwrap().to_string();
    assert!(outcome.starts_with("unavailable"), "{outcome}");
    assert!(outcome.contains("too many concurrent calls"), "{outcome}");
    assert!(took <= AT_ONCE, "the refusal took {took:?}");
    assert!(held.iter().all(|(answer, _)| answer.status == 504), "{}", tally(&held));

    // The slot held until 1 s; the call, sent at 0.3 s, queues, gets the
    // slot at 1 s and its own deadline at 1.3 s.
    let (held, (called, took)) = tokio::join!(server.get("/busy/burn/3000"), {
        let server = &server;
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let sent = Instant::now();
            (server.get("/caller/call/busy/3000").await, sent.elapsed())
        }
    });
    println!("busy held: {}; caller answered in {took:?}: {}", held.status, called.json());
    assert_eq!(held.status, 504);
    assert_eq!(called.status, 200, "{}", String::from_utf8_lossy(&called.body));
    assert_eq!(called.json()["outcome"], "timed out");
    let limit = Duration::from_secs(1) + GRACE;
    assert!(took <= limit, "the timeout reached the caller after {took:?}");
}
