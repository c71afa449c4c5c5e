//! Compare-and-swap at commit: a request that lost a race is run again (up
//! to 3 times) when it made no `services` calls, and answered 409 when it
//! did, since running it again would repeat the calls' effects.

use crate::support::{Server, fresh_dir, single_component_config};

/// Deadline and parallelism wide enough that every request of a round runs
/// at once and four rounds of 600 ms fit.
fn config() -> String {
    single_component_config("probe", "kvprobe", "deadline_ms = 20000\nmax_parallel = 8", "/p")
}

/// How many times the guest ran `cas` on `key` (it prints a line per run).
fn runs(server: &Server, key: &str) -> usize {
    server.log().matches(&format!("cas run on {key}")).count()
}

/// Five requests read the counter at once and swap it: each round one
/// commits and the others are run again, until each has won (a loser is
/// run again until its deadline, not a fixed number of times: writers on
/// several hosts may lose more often than three times in a row).
#[tokio::test]
async fn a_lost_compare_and_swap_runs_again_until_it_wins() {
    let server = Server::start_with(Some(&config()), fresh_dir()).await;
    let racers = (0..5).map(|_| server.send("POST", "/p/cas/c/600", ""));
    let answers = futures::future::join_all(racers).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200; 5], "each wins in turn");
    for won in &answers {
        assert_eq!(won.json()["swapped"], true);
    }
    assert_eq!(server.get("/p/kv/c").await.body, "5", "every win counted, nothing else");
    // Rounds of 5, 4, 3, 2 and 1 runs: the last ran 5 times (4 reruns).
    assert_eq!(runs(&server, "c"), 15, "{}", server.log());
}

/// An invocation that called another service is not run again: its loser
/// gets 409 after one run, and the caller decides.
#[tokio::test]
async fn a_lost_compare_and_swap_after_a_services_call_is_409() {
    let server = Server::start_with(Some(&config()), fresh_dir()).await;
    let racers = (0..2).map(|_| server.send("POST", "/p/cas/d/600?call=user", ""));
    let answers = futures::future::join_all(racers).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    let lost = answers.iter().find(|a| a.status == 409).unwrap();
    assert!(lost.error().contains("a concurrent request changed key"), "{}", lost.error());
    assert_eq!(server.get("/p/kv/d").await.body, "1");
    assert_eq!(runs(&server, "d"), 2, "neither ran twice: {}", server.log());
}

/// The same for an invocation that sent a `wasi:http` request out
/// (docs/services.md): its loser gets 409 after one run, and the host it
/// called sees each request once.
#[tokio::test]
async fn a_lost_compare_and_swap_after_an_outgoing_request_is_409() {
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let upstream = crate::support::loopback_server({
        let sent = sent.clone();
        move |_, _| {
            sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { http::Response::new(http_body_util::Full::new(bytes::Bytes::new())) }
        }
    })
    .await;
    let authority = upstream.trim_start_matches("http://").to_string();
    let allowed = format!("allowed_outbound_hosts = [\"{authority}\"]");
    let config = config().replace("max_parallel = 8", &format!("max_parallel = 8\n{allowed}"));
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let path = format!("/p/cas/e/600?fetch={authority}");
    let answers = futures::future::join_all((0..2).map(|_| server.send("POST", &path, ""))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 409],
        "{:?}",
        answers.iter().map(|a| a.body.clone()).collect::<Vec<_>>()
    );
    assert_eq!(server.get("/p/kv/e").await.body, "1");
    assert_eq!(runs(&server, "e"), 2, "neither ran twice: {}", server.log());
    assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 2, "the host saw each request once");
}
