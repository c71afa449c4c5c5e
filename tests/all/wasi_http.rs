//! Components built for the standard `wasi:http/proxy` world (what
//! `wasmtime serve`, Spin and wasmCloud run) deploy and serve unchanged,
//! behind the same gateway, limits and breaker as a pitstop service.

use std::time::{Duration, Instant};

use crate::support::{
    Looping, Server, assert_no_failure_across, fresh_dir, single_component_config, test_components,
    text,
};

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(test_components().join(format!("{name}.wasm"))).unwrap()
}

/// `http_probe` as `web` at `/h`, with a 1 s deadline and a breaker that
/// opens after 3 failures in a row.
fn config() -> String {
    format!(
        r#"
        [components.web]
        path = "{}"
        deadline_ms = 1000
        breaker = {{ consecutive_failures = 3, open_ms = 60000 }}

        [[routes]]
        prefix = "/h"
        component = "web"
        "#,
        test_components().join("http_probe.wasm").display()
    )
}

/// The process's peak resident memory so far.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Deployed through the admin API and routed like any service: the guest
/// sees the method, the path with its query, the client's headers, the
/// body and the request's trace context; the answer carries the platform's
/// headers. `wasmtime serve`'s hello deploys the same way.
#[tokio::test]
async fn a_wasi_http_component_deploys_and_serves() {
    let server = Server::start().await;
    let deployed = server.admin("PUT", "/admin/components/web?route=/h", wasm("http_probe")).await;
    assert_eq!(deployed.status, 201, "{}", text(&deployed.body));

    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [("x-probe", "yes"), ("traceparent", trace)];
    let answer = server.send_with("POST", "/h/echo?x=1&y=2", &headers, "hello").await;
    assert_eq!(answer.status, 200, "{}", text(&answer.body));
    let seen = text(&answer.body);
    for line in [
        "method POST\n",
        "path /h/echo?x=1&y=2\n",
        "header x-probe: yes\n",
        "header traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-",
        "body 5 bytes\n",
    ] {
        assert!(seen.contains(line), "{line:?} not in:\n{seen}");
    }
    assert_eq!(answer.headers["pitstop-component"], "web");
    assert_eq!(answer.headers["pitstop-version"], "1");
    assert_eq!(answer.headers["content-type"], "text/plain");

    let hello =
        server.admin("PUT", "/admin/components/hello?route=/hello", wasm("http_hello")).await;
    assert_eq!(hello.status, 201, "{}", text(&hello.body));
    let answer = server.get("/hello").await;
    assert_eq!((answer.status, text(&answer.body)), (200, r#"{"hello":"world"}"#.to_string()));
}

/// The guest writes its body while its handler runs, a chunk at a time:
/// bodies of many chunks arrive whole, and one over the gateway's response
/// limit (1 MiB) is a 502, not a hang.
#[tokio::test]
async fn bodies_of_many_chunks_arrive_whole() {
    let server = Server::start_with(Some(&config()), fresh_dir()).await;
    let answer = server.get("/h/big/300").await;
    assert_eq!(answer.status, 200, "{}", text(&answer.body));
    assert_eq!(answer.body.len(), 300 * 1024);
    assert!(answer.body.iter().all(|b| *b == b'x'));
    let started = Instant::now();
    let too_big = server.get("/h/big/2048").await;
    assert_eq!(too_big.status, 502, "{}", text(&too_big.body));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(server.get("/h/status/204").await.status, 204);

    // A guest streaming 256 MiB is cut off past the limit: the host reads
    // a megabyte, not the stream.
    // (The peak, VmHWM: a body read whole and freed leaves no trace in RSS.)
    let before = peak_rss_kib(server.pid());
    let flood = server.get("/h/big/262144").await;
    assert_eq!(flood.status, 502, "{}", text(&flood.body));
    let grown = peak_rss_kib(server.pid()).saturating_sub(before);
    println!("a 256 MiB stream cut off at 1 MiB: host peak memory {grown} KiB higher");
    // Eight times the limit: reading the stream whole would be 256 MiB.
    assert!(grown < 8 * 1024, "host memory peaked {grown} KiB higher");
}

/// What a guest gets wrong is answered as for any service: a trap is 500,
/// no answer at all is 500 in words, a loop is 504 at the deadline, and
/// failures in a row open the component's breaker.
#[tokio::test]
async fn failures_are_answered_and_open_the_breaker() {
    let server = Server::start_with(Some(&config()), fresh_dir()).await;
    let trapped = server.get("/h/trap").await;
    assert_eq!(trapped.status, 500, "{}", text(&trapped.body));
    let silent = server.get("/h/noset").await;
    assert_eq!(silent.status, 500);
    assert!(silent.error().contains("without answering"), "{}", silent.error());
    let started = Instant::now();
    let looping = server.get("/h/loop").await;
    assert_eq!(looping.status, 504, "{}", text(&looping.body));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    // Three failures in a row: the breaker is open, the guest not called.
    let refused = server.get("/h/echo").await;
    assert_eq!(refused.status, 503, "{}", text(&refused.body));
    assert!(refused.error().contains("circuit open"), "{}", refused.error());
    let state = r#"pitstop_breaker_state{component="web"}"#;
    assert_eq!(server.metric(state).await, 2.0, "open");
}

/// Outgoing requests never leave the host: one to a listening address is
/// refused with `HTTP-request-denied`, and nothing connects to it.
#[tokio::test]
async fn outgoing_requests_are_refused() {
    let server = Server::start_with(Some(&config()), fresh_dir()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let answer = server.get(&format!("/h/fetch/{target}/anything")).await;
    assert_eq!(answer.status, 502, "{}", text(&answer.body));
    assert!(text(&answer.body).contains("HttpRequestDenied"), "{}", text(&answer.body));
    let connected = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(connected.is_err(), "the host connected for the guest");
    // Not a component name either (names are lower-case words).
    let odd = server.get("/h/fetch/Not_A_Name.svc/x").await;
    assert!(text(&odd.body).contains("HttpRequestDenied"), "{}", text(&odd.body));
}

/// `http://NAME.svc/...` is a `services` call: the callee sees the
/// platform's `pitstop-caller` (not one the guest forged) and the caller's
/// trace; a self-call works with one turn at the CPU (the caller's turn is
/// given up while it waits); an unknown name is `destination-not-found`.
#[tokio::test]
async fn requests_to_svc_names_are_service_calls() {
    let config =
        config().replace("deadline_ms = 1000", "deadline_ms = 1000\n        max_parallel = 1");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [("traceparent", trace), ("pitstop-caller", "forged")];
    let answer = server.send_with("GET", "/h/fetch/web.svc/h/echo", &headers, "").await;
    assert_eq!(answer.status, 200, "{}", text(&answer.body));
    let seen = text(&answer.body);
    assert!(seen.starts_with("status 200\nmethod GET\npath /h/echo\n"), "{seen}");
    assert!(seen.contains("header pitstop-caller: web\n"), "{seen}");
    assert!(!seen.contains("forged"), "{seen}");
    assert!(seen.contains("header traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{seen}");

    // A chain deeper than 8: `HTTP-request-denied`, for the ninth call.
    // (Each failure below counts for web's breaker, which opens at the
    // third: the trap comes last.)
    let nine_deep = "/h/fetch/web.svc".repeat(9) + "/h/echo";
    let denied = server.get(&nine_deep).await;
    let said = text(&denied.body);
    assert_eq!(said.matches("status 200\n").count(), 7, "calls 1-7 answered 200: {said}");
    assert!(said.ends_with("HttpRequestDenied"), "the ninth call refused: {said}");

    let missing = server.get("/h/fetch/nowhere.svc/x").await;
    assert_eq!(missing.status, 502);
    assert!(text(&missing.body).contains("DestinationNotFound"), "{}", text(&missing.body));

    // A callee that traps: `HTTP-response-incomplete`.
    let trapped = server.get("/h/fetch/web.svc/h/trap").await;
    assert_eq!(trapped.status, 502);
    assert!(text(&trapped.body).contains("HttpResponseIncomplete"), "{}", text(&trapped.body));
}

/// A wasi:http component swaps and rolls back like a service.
#[tokio::test]
async fn swaps_and_rolls_back() {
    let server = Server::start().await;
    let path = "/admin/components/web?route=/h";
    assert_eq!(server.admin("PUT", path, wasm("http_probe")).await.status, 201);
    assert_eq!(server.admin("PUT", path, wasm("http_hello")).await.status, 200, "a new version");
    let hello = server.get("/h/echo").await;
    assert_eq!(text(&hello.body), r#"{"hello":"world"}"#);
    assert_eq!(hello.headers["pitstop-version"], "2");
    let back = server.admin("POST", "/admin/components/web/rollback", "").await;
    assert_eq!(back.status, 200, "{}", text(&back.body));
    let probe = server.get("/h/echo").await;
    assert!(text(&probe.body).starts_with("method GET\n"), "{}", text(&probe.body));
    assert_eq!(probe.headers["pitstop-version"], "1");
}

/// A pitstop service that also imports `wasi:http/types` (StarlingMonkey's
/// JavaScript services do, whatever they export) deploys and uses it.
#[tokio::test]
async fn a_service_importing_wasi_http_types_serves() {
    let config = single_component_config("probe", "kvprobe", "", "/p");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let answer = server.get("/p/wasi-http-fields").await;
    assert_eq!(answer.status, 200, "{}", text(&answer.body));
    assert_eq!(text(&answer.body), "x-made-by: wasi:http");
}

/// The gateway's rules apply to a wasi:http component as to any service:
/// a write without a token is 401 (the default policy), the route's rate
/// limit answers 429, and `serve --watch` deploys the file dropped in.
#[tokio::test]
async fn auth_rate_limits_and_watch_apply() {
    let watched = tempfile::TempDir::new().unwrap();
    let config = config().replace(
        "component = \"web\"",
        "component = \"web\"\n        rate_limit = { per_second = 1, burst = 3 }",
    );
    let server = Server::start_with_args(
        Some(&config),
        fresh_dir(),
        &["--watch".as_ref(), watched.path().as_os_str()],
    )
    .await;
    let anonymous = server.send_raw("POST", "/h/echo", &[], "x").await;
    assert_eq!(anonymous.status, 401, "{}", text(&anonymous.body));
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(server.get("/h/echo").await.status);
        }
        statuses
    };
    assert!(statuses.contains(&429), "no 429 in {statuses:?}");

    std::fs::copy(test_components().join("http_hello.wasm"), watched.path().join("hi.wasm"))
        .unwrap();
    crate::support::eventually("hi deployed by --watch", Duration::from_secs(20), || async {
        let listed = server.admin("GET", "/admin/components", "").await;
        text(&listed.body).contains("\"hi\"").then_some(())
    })
    .await;
}

/// Clients looping while the component is swapped to a rebuild of it and
/// rolled back see no failed request, including those in flight across
/// each change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swaps_under_load_fail_no_request() {
    let server = std::sync::Arc::new(Server::start().await);
    let path = "/admin/components/web?route=/h";
    assert_eq!(server.admin("PUT", path, wasm("http_probe")).await.status, 201);
    // Three clients' requests take 0.7 to 1.5 s, longer than a change
    // takes, and end at different times, so a change finds some running;
    // two clients' 10 ms, so the new version answers while they run.
    let slow = ["/h/sleep/700", "/h/sleep/1100", "/h/sleep/1500"];
    let quick = "/h/sleep/10";
    let load = Looping::start(&server, &[slow[0], slow[1], slow[2], quick, quick], 5);
    let changes = load.swap_and_roll_back(&server, "web", 1, &wasm("http_probe"), 3).await;
    assert_no_failure_across(&load.stop().await, &changes);
}
