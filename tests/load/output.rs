//! Guest output is capped per invocation: a guest printing or logging
//! 100,000 lines gets its answer in time, the host log keeps at most the
//! first 10,000 (the default `max_log_lines`), the rest are counted as
//! dropped, and one warning says so.

use std::time::{Duration, Instant};

use crate::support::eventually;
use crate::{alone, config, start};

const DROPPED: &str = r#"pitstop_guest_log_dropped_total{component="busy"}"#;
const WARNING: &str = "guest output over its limit";
const LINES: usize = 100_000;
const KEPT: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_is_capped_per_invocation() {
    let _alone = alone().await;
    // JSON lines, so the guest's lines can be told apart by their fields.
    let (server, _) = start(&config("", ""), &["--log-format", "json"]).await;

    // stdout (`stream` = "stdout"), then the `log` import (no `stream`).
    for (round, (route, stream)) in [("print", Some("stdout")), ("log", None)].iter().enumerate() {
        let invocations = round + 1;
        let started = Instant::now();
        let answer = server.get(&format!("/busy/{route}/{LINES}")).await;
        let took = started.elapsed();
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
        let dropped = server.metric(DROPPED).await;
        // The log is written off the workers: wait for this round's warning.
        eventually("the warning", Duration::from_secs(10), || async {
            (warnings(&server.log()) >= invocations).then_some(())
        })
        .await;
        // And for the lines before it, which the log writes apart from it.
        let kept = eventually("the kept lines", Duration::from_secs(10), || async {
            let kept = guest_lines(&server.log(), *stream);
            (kept.len() >= KEPT).then_some(kept)
        })
        .await;
        let log = server.log();
        println!(
            "GET /busy/{route}/{LINES}: 200 in {took:?}; {} lines in the host log, \
             {dropped} dropped in all, {} warnings in all",
            kept.len(),
            warnings(&log)
        );
        assert!(took < Duration::from_secs(5), "answered after {took:?}, deadline 5 s");
        assert_eq!(dropped, ((LINES - KEPT) * invocations) as f64);
        assert_eq!(warnings(&log), invocations, "one warning per invocation");
        // The first KEPT, each once, and none after them.
        assert!(kept.iter().copied().eq(0..KEPT), "the guest's lines kept: {} of them", kept.len());
    }
    assert_eq!(server.get("/busy/ok").await.status, 200, "still serving");
}

/// Lines of the log saying the guest's output went over its limit.
fn warnings(log: &str) -> usize {
    log.lines().filter(|line| line.contains(WARNING)).count()
}

/// The numbers of the guest's `x N` lines in the log on `stream` (`None`:
/// through the `log` import), in the order logged.
fn guest_lines(log: &str, stream: Option<&str>) -> Vec<usize> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["target"] == "guest" && event["fields"]["stream"].as_str() == stream)
        .filter_map(|event| event["fields"]["message"].as_str()?.strip_prefix("x ")?.parse().ok())
        .collect()
}
