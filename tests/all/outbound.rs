//! Outgoing `wasi:http` requests to hosts outside the platform: only those
//! a component's `allowed_outbound_hosts` lists are reached, within its
//! deadline, and a guest waiting on one does not hold its turn at the CPU.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Server, fresh_dir, serve_refuses, silent_host, test_components, text};

/// `http_probe` as `web` at `/h` (1 s deadline, one instance at the CPU
/// at a time), allowed to reach `allowed`.
fn config(allowed: &str) -> String {
    format!(
        r#"
        [components.web]
        path = "{}"
        deadline_ms = 1000
        max_parallel = 1
        allowed_outbound_hosts = [{allowed}]

        [[routes]]
        prefix = "/h"
        component = "web"
        "#,
        test_components().join("http_probe.wasm").display()
    )
}

/// Read one request's head from `stream`.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn answer(stream: &mut TcpStream, body: &str) {
    let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    stream.write_all(response.as_bytes()).await.unwrap();
}

/// A listed host is reached and its answer read; the same address one port
/// off is refused with `HTTP-request-denied`, and the host never connects.
#[tokio::test]
async fn only_allowed_hosts_are_reached() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (up, off) = (upstream.local_addr().unwrap(), other.local_addr().unwrap());
    let server = Server::start_with(Some(&config(&format!("\"http://{up}\""))), fresh_dir()).await;
    let served = tokio::spawn(async move {
        let (mut stream, _) = upstream.accept().await.unwrap();
        let head = read_head(&mut stream).await;
        answer(&mut stream, "from upstream").await;
        head
    });
    let reached = server.get(&format!("/h/fetch/{up}/up/stream")).await;
    assert_eq!(reached.status, 200, "{}", text(&reached.body));
    assert_eq!(text(&reached.body), "status 200\nfrom upstream");
    let head = served.await.unwrap();
    assert!(head.starts_with("GET /up/stream HTTP/1.1\r\n"), "{head}");

    let refused = server.get(&format!("/h/fetch/{off}/x")).await;
    assert_eq!(refused.status, 502, "{}", text(&refused.body));
    assert!(text(&refused.body).contains("HttpRequestDenied"), "{}", text(&refused.body));
    let connected = tokio::time::timeout(Duration::from_millis(200), other.accept()).await;
    assert!(connected.is_err(), "the host connected to a host not listed");
}

/// A host that never answers costs the request its deadline, no more: the
/// client gets its answer by then and the host hangs up on the upstream.
#[tokio::test]
async fn a_silent_host_is_given_up_at_the_deadline() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = upstream.local_addr().unwrap();
    let server = Server::start_with(Some(&config(&format!("\"{up}\""))), fresh_dir()).await;
    let held = tokio::spawn(async move {
        let (mut stream, _) = upstream.accept().await.unwrap();
        read_head(&mut stream).await;
        // Say nothing; wait for the host to hang up.
        let mut rest = [0u8; 64];
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut rest)).await
    });
    let started = std::time::Instant::now();
    let answer = server.get(&format!("/h/fetch/{up}/slow")).await;
    let took = started.elapsed();
    // The guest is told of the timeout while it can still answer: the
    // probe's 502, which names the timeout.
    let said = text(&answer.body);
    assert_eq!(answer.status, 502, "{said}");
    assert!(said.contains("Timeout"), "{said}");
    assert!(took < Duration::from_millis(1900), "answered after {took:?}");
    let hung_up = held.await.unwrap();
    assert!(matches!(hung_up, Ok(Ok(0))), "the connection was left open: {hung_up:?}");
}

/// While one instance waits for an upstream, another instance of the same
/// component (`max_parallel = 1`) runs: here the upstream answers only once
/// that second request is served, so holding the turn would deadlock both
/// until the deadline.
#[tokio::test]
async fn a_waiting_guest_gives_up_its_turn() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = upstream.local_addr().unwrap();
    let server = Server::start_with(Some(&config(&format!("\"{up}\""))), fresh_dir()).await;
    let server = std::sync::Arc::new(server);
    let (second_done, second_served) = tokio::sync::oneshot::channel::<()>();
    let upstream_task = tokio::spawn(async move {
        let (mut stream, _) = upstream.accept().await.unwrap();
        read_head(&mut stream).await;
        let _ = second_served.await;
        answer(&mut stream, "late").await;
    });
    let first = {
        let (server, path) = (server.clone(), format!("/h/fetch/{up}/wait"));
        tokio::spawn(async move { server.get(&path).await })
    };
    server.wait_in_flight("web", 1.0).await;
    let second = server.get("/h/echo").await;
    assert_eq!(second.status, 200, "{}", text(&second.body));
    second_done.send(()).unwrap();
    let first = first.await.unwrap();
    assert_eq!(text(&first.body), "status 200\nlate");
    upstream_task.await.unwrap();
}

/// An entry that is not a host is refused when the file is read, naming it.
#[test]
fn a_bad_entry_is_refused_at_start() {
    let stderr = serve_refuses(&config("\"http://api.example.com/v1\""));
    assert!(
        stderr.contains("allowed_outbound_hosts entry \"http://api.example.com/v1\""),
        "{stderr}"
    );
    assert!(stderr.contains("path or query"), "{stderr}");
}

/// A guest fanning out 100 requests to a host that never answers gets 20
/// connections (its `max_outbound_connections`) and 80 at once refused
/// with `connection-limit-reached`; the host sees 20, and they close with
/// the invocation, a reused instance's too (which kept the requests it
/// made: 2,000 connections stayed open for over a minute before, and 5
/// invocations of 6,000 held 16,901 file descriptors).
#[tokio::test]
async fn outgoing_connections_are_capped_and_close_with_their_invocation() {
    let (up, open, accepted) = silent_host().await;
    for reuse in ["", "reuse = { max_requests = 100 }"] {
        let config = config(&format!("\"{up}\"")).replace(
            "deadline_ms = 1000",
            &format!("deadline_ms = 3000\nmax_outbound_connections = 20\n{reuse}"),
        );
        let server = Server::start_with(Some(&config), fresh_dir()).await;
        let before = accepted.load(Ordering::SeqCst);
        let answer = server.get(&format!("/h/fan-keep/100/{up}/x")).await;
        assert_eq!(
            (answer.status, text(&answer.body)),
            (200, "pending 20 refused 80 answered 0 other 0".to_string()),
            "{reuse}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst) - before, 20, "{reuse}");
        let what = format!("the connections closed ({reuse:?})");
        crate::support::eventually(&what, Duration::from_secs(2), || async {
            (open.load(Ordering::SeqCst) == 0).then_some(())
        })
        .await;
        // And the permits came back: the next invocation gets its 20.
        let again = server.get(&format!("/h/fan/30/{up}/x")).await;
        assert_eq!(text(&again.body), "pending 20 refused 10 answered 0 other 0", "{reuse}");
    }
}
