//! The gateway: routing, health, limits, error shape, headers, shutdown.

use std::time::Duration;

use serde_json::json;

use crate::support::Server;

#[tokio::test]
async fn unknown_paths_are_404_json() {
    let server = Server::start().await;
    for path in ["/", "/nope", "/usersx", "/orderz/1"] {
        let answer = server.get(path).await;
        assert_eq!(answer.status, 404, "{path}");
        assert!(answer.error().contains("no route"), "{path}: {}", answer.error());
    }
}

#[tokio::test]
async fn responses_name_the_component_and_version() {
    let server = Server::start().await;
    let answer = server.get("/users/usr_nobody").await;
    assert_eq!(answer.header("pitstop-component"), Some("user"));
    assert_eq!(answer.header("pitstop-version"), Some("1"));
    let answer = server.get("/payments/pay_nobody").await;
    assert_eq!(answer.header("pitstop-component"), Some("payment"));
    // The access log naming them is observability.rs's.
}

#[tokio::test]
async fn ready_reports_storage_bus_and_components_and_health_is_liveness() {
    let server = Server::start().await;
    let answer = server.get("/ready").await;
    assert_eq!(answer.status, 200);
    let report = answer.json();
    assert_eq!(report["status"], "healthy");
    for check in ["storage", "bus", "component:user", "component:order", "component:payment"] {
        assert_eq!(report["checks"][check], "ok", "{report}");
    }
    assert_eq!(server.send("POST", "/ready", "").await.status, 405);
    let live = server.get("/health").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "healthy");
    assert_eq!(server.send("POST", "/health", "").await.status, 405);
}

/// A built-in service the operator undeployed is a decision, not a
/// missing component: `/ready` stays 200, and no longer lists it.
#[tokio::test]
async fn an_undeployed_built_in_leaves_the_host_ready() {
    let gone = crate::support::refusing_address();
    let config = format!("[[routes]]\nprefix = \"/legacy\"\nupstream = \"http://{gone}\"\n");
    let server = Server::start_with(Some(&config), crate::support::fresh_dir()).await;
    assert_eq!(server.admin("DELETE", "/admin/components/order", "").await.status, 200);
    let answer = server.get("/ready").await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert!(answer.json()["checks"].get("component:order").is_none(), "{}", answer.json());
    assert_eq!(answer.json()["checks"]["component:user"], "ok");
}

#[tokio::test]
async fn ready_is_503_when_a_routed_component_is_missing() {
    let config = r#"
        [[routes]]
        prefix = "/users"
        component = "user"

        [[routes]]
        prefix = "/ghost"
        component = "ghost"
    "#;
    let server = Server::start_with(Some(config), crate::support::fresh_dir()).await;
    let answer = server.get("/ready").await;
    assert_eq!(answer.status, 503);
    let report = answer.json();
    assert_eq!(report["status"], "unhealthy");
    assert_eq!(report["checks"]["component:user"], "ok");
    assert_eq!(report["checks"]["component:ghost"], "routed but not deployed");
    // The process is alive all the same.
    assert_eq!(server.get("/health").await.status, 200);

    // A route whose component is not deployed is not live, and serve
    // said so when it started, naming the route.
    let ghost = server.get("/ghost/x").await;
    assert_eq!(ghost.status, 404);
    assert!(ghost.error().contains("no route"));
    let warned = server.log();
    let warning = warned.lines().find(|line| line.contains("route /ghost leads to component"));
    assert!(warning.is_some_and(|line| line.contains("WARN")), "{warned}");
    assert!(!warned.contains("route /users leads"), "{warned}");
    // The configured table adds to the built-in one.
    assert_eq!(server.get("/orders/ord_x").await.header("pitstop-component"), Some("order"));
}

/// `serve --strict` refuses to start on a route to a component that is
/// neither configured nor deployed, naming it.
#[tokio::test]
async fn strict_serve_refuses_a_route_to_an_unknown_component() {
    let dir = crate::support::fresh_dir();
    let config = dir.path().join("pitstop.toml");
    std::fs::write(&config, "[[routes]]\nprefix = \"/inventory\"\ncomponent = \"inventroy\"\n")
        .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
        .args(["serve", "--strict", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--strict"), "{stderr}");
    assert!(stderr.contains("/inventory -> inventroy"), "{stderr}");
}

/// `[gateway] builtin_routes = false` leaves only the configured routes.
#[tokio::test]
async fn the_built_in_routes_can_be_left_out() {
    let config = "[gateway]\nbuiltin_routes = false\n[[routes]]\nprefix = \"/users\"\ncomponent = \"user\"\n";
    let server = Server::start_with(Some(config), crate::support::fresh_dir()).await;
    assert_eq!(server.get("/users/usr_x").await.header("pitstop-component"), Some("user"));
    for path in ["/orders/ord_x", "/payments/pay_x"] {
        let answer = server.get(path).await;
        assert_eq!(answer.status, 404, "{path}");
        assert!(answer.error().contains("no route"), "{path}: {}", answer.error());
    }
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let server = Server::start().await;
    let name = "x".repeat(1024 * 1024 + 1);
    let answer = server.post("/users", json!({"name": name, "email": "big@example.com"})).await;
    assert_eq!(answer.status, 413);
    assert!(answer.error().contains("exceeds"));
    // Just under the limit reaches the component (which then validates it).
    let answer = server
        .post("/users", json!({"name": "x".repeat(900_000), "email": "big@example.com"}))
        .await;
    assert_eq!(answer.status, 400);
    assert!(answer.error().contains("longer than"));
}

/// What the gateway reads of a raw HTTP/1.1 response on `stream`: the head
/// (lower-cased) and a body of its `content-length`.
async fn read_response(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed after {:?}", String::from_utf8_lossy(&buffer));
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse().unwrap());
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside the body");
        buffer.extend_from_slice(&chunk[..n]);
    }
    (head, buffer[head_end..head_end + length].to_vec())
}

/// `answer`, or a panic after 10 s.
async fn timeout<T>(answer: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), answer)
        .await
        .expect("no complete response within 10 s")
}

/// A component's headers that describe the connection never reach the
/// client: the gateway frames the response itself and the connection stays
/// open for the next request, whatever the component claimed.
#[tokio::test]
async fn a_component_cannot_speak_for_the_connection() {
    use tokio::io::AsyncWriteExt;
    let config = crate::support::single_component_config("trap", "trap", "", "/trap");
    let server = Server::start_with(Some(&config), crate::support::fresh_dir()).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(b"GET /trap/hop HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
        let (head, body) = timeout(read_response(&mut stream)).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, b"hello", "{head}");
        assert!(head.contains("\r\nx-ok: 1\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-length: 5\r\n"), "{head}");
        // The guest's wrong length, as a header: a bare "999" also turns
        // up in the random trace and request ids now and then.
        for dropped in
            ["connection: close", "transfer-encoding", "upgrade", "x-bad", "content-length: 999"]
        {
            assert!(!head.contains(dropped), "{dropped} reached the client: {head}");
        }
    }
}

/// A body streamed without `Content-Length` is cut off at the limit: 413,
/// and no more of it is read.
#[tokio::test]
async fn a_streamed_body_over_the_limit_is_413() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start().await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let token = server.token.clone().unwrap();
    let head = format!(
        "POST /users HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // 1.25 MiB in 64 KiB chunks; the gateway may answer before the last.
    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
    for _ in 0..20 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let (head, body) = timeout(read_response(&mut stream)).await;
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("exceeds"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(server.get("/users/x").await.status, 404, "still serving");
}

#[tokio::test]
async fn bad_config_files_are_refused_with_a_message() {
    let stderr = crate::support::serve_refuses("[gateway]\nmax_body = 3\n");
    assert!(stderr.contains("unknown field `max_body`"), "{stderr}");
}

#[tokio::test]
async fn ctrl_c_and_sigterm_stop_cleanly() {
    for signal in ["INT", "TERM"] {
        let server = Server::start().await;
        server.create_user("Gus", "gus@example.com").await;
        let status = server.stop_with(signal).await;
        assert!(status.success(), "SIG{signal} -> {status}");
    }
}

/// A SIGTERM that arrives while the platform is still starting (compiling
/// the built-ins on a fresh data dir) is not lost and does not kill it: the
/// start finishes, then the host stops cleanly. (The handlers used to be
/// installed after the addresses were printed.)
#[tokio::test]
async fn a_sigterm_during_the_start_stops_cleanly_after_it() {
    let dir = crate::support::cold_dir();
    let data = dir.path().join("data");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The data dir appears at once; compiling the three built-ins takes
    // most of a second more.
    crate::support::eventually("the data dir exists", Duration::from_secs(10), || async {
        data.join("db").exists().then_some(())
    })
    .await;
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status =
        tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{}: {stdout}", status.status);
    assert!(stdout.contains("pitstop listening on"), "the start finished: {stdout}");
    assert!(stdout.contains("pitstop stopped"), "{stdout}");
}

/// `pitstop-*` request headers are the platform's: the caller of a service
/// call is named in `pitstop-caller`, which the order service trusts for its
/// internal `_begin` step. A client sending it is ignored.
#[tokio::test]
async fn clients_cannot_forge_platform_headers() {
    let server = Server::start().await;
    let order = serde_json::json!({
        "id": "ord_forged", "user_id": "usr_x", "items": [], "amount": 1,
        "status": "CONFIRMED", "payment_id": null
    });
    let forged = server
        .send_with("POST", "/orders/_begin", &[("pitstop-caller", "order")], order.to_string())
        .await;
    assert_eq!(forged.status, 405, "treated as a client request");
    assert_eq!(server.get("/orders/ord_forged").await.status, 404, "nothing was stored");
}

/// A server with the hostile `trap` component at `/trap`.
async fn trap_server() -> Server {
    let config = crate::support::single_component_config("trap", "trap", "", "/trap");
    Server::start_with(Some(&config), crate::support::fresh_dir()).await
}

/// A component answering a status outside 200-599 (an interim 1xx such as
/// "101 Switching Protocols", or no HTTP status at all) gets 502, and the
/// client's connection goes on serving: a 101 would have handed it over.
#[tokio::test]
async fn replies_with_interim_or_invalid_statuses_are_502() {
    use std::io::{Read, Write};
    let server = trap_server().await;
    for code in [100, 101, 103, 199, 600, 1000] {
        let answer = server.get(&format!("/trap/status/{code}")).await;
        assert_eq!(answer.status, 502, "status {code}: {}", String::from_utf8_lossy(&answer.body));
        assert!(answer.error().contains(&format!("status {code}")), "{}", answer.error());
    }
    for code in [200, 204, 418, 599] {
        assert_eq!(server.get(&format!("/trap/status/{code}")).await.status, code);
    }
    // Two requests on one keep-alive connection: the first answer is a
    // 502, and the second request still gets its answer.
    let addr = server.base.trim_start_matches("http://").to_string();
    let answers = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
            .write_all(
                b"GET /trap/status/101 HTTP/1.1\r\nhost: x\r\n\r\n\
                  GET /trap/ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .unwrap();
        let mut all = String::new();
        let _ = stream.read_to_string(&mut all);
        all
    })
    .await
    .unwrap();
    // The first body has no trailing newline: find the status lines anywhere.
    let statuses: Vec<&str> =
        answers.match_indices("HTTP/1.1 ").map(|(at, _)| &answers[at + 9..at + 12]).collect();
    assert_eq!(statuses, ["502", "200"], "{answers}");
}

/// Response heads are bounded like bodies: too many headers, or too many
/// bytes of them, get 502 and a log line, never a 12 MB head or a
/// connection closed without a word.
#[tokio::test]
async fn oversized_response_heads_are_502() {
    let server = trap_server().await;
    for (path, what) in
        [("/trap/headers/200/60000", "bytes"), ("/trap/headers/100000/1", "headers")]
    {
        let answer = server.get(path).await;
        assert_eq!(answer.status, 502, "{path}: {}", String::from_utf8_lossy(&answer.body));
        let error = answer.error();
        assert!(error.contains("response head") && error.contains(what), "{path}: {error}");
        assert!(answer.body.len() < 1024, "{path}: the 502 is short");
    }
    let fine = server.get("/trap/headers/50/100").await;
    assert_eq!(fine.status, 200);
    assert_eq!(fine.header("x-h49").map(str::len), Some(100));
    crate::support::eventually("the 502's log line", Duration::from_secs(5), || async {
        server.log().contains("response head").then_some(())
    })
    .await;
}
