//! Routes to an HTTP upstream (the strangler fig): a small "legacy" server
//! on loopback behind the gateway's auth, rate limits, trace context,
//! deadline and breaker; then one of its sub-paths moved to a component
//! without a restart, both serving.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::{Server, fresh_dir, test_components};

/// The queries of the `/legacy/slow` requests the legacy servers began to
/// answer, in every test of the run.
static SLOW_BEGUN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A legacy server: `/legacy/slow` answers after 3 s (noting its query in
/// [`SLOW_BEGUN`] first), `/legacy/fail` with
/// 500, `/legacy/big` with 2 MiB; everything else with what it received:
/// `{"method","path","query","headers":{name: value},"body"}`.
async fn legacy_server() -> String {
    crate::support::loopback_server(|parts: http::request::Parts, body: Bytes| async move {
        let (status, answer) = match parts.uri.path() {
            "/legacy/slow" => {
                let query = parts.uri.query().unwrap_or_default().to_string();
                SLOW_BEGUN.lock().unwrap().push(query);
                tokio::time::sleep(Duration::from_secs(3)).await;
                (200, Bytes::from_static(b"{}"))
            }
            "/legacy/fail" => (500, Bytes::from_static(b"{\"error\":\"legacy broke\"}")),
            "/legacy/big" => (200, Bytes::from(vec![b'x'; 2 << 20])),
            "/legacy/sized" => (200, Bytes::from_static(b"0123456789")),
            path => {
                let headers: serde_json::Map<String, Value> = parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").into()))
                    .collect();
                let echo = json!({
                    "method": parts.method.as_str(),
                    "path": path,
                    "query": parts.uri.query().unwrap_or(""),
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                });
                (200, Bytes::from(echo.to_string()))
            }
        };
        let mut response = http::Response::new(Full::new(answer));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        response.headers_mut().insert("x-legacy", "yes".parse().unwrap());
        // Said outright, so a HEAD answer carries it too (hyper leaves it
        // out of a HEAD answer unless the handler sets it).
        if parts.uri.path() == "/legacy/sized" {
            response.headers_mut().insert("content-length", "10".parse().unwrap());
        }
        // The gateway's to set: never passed on.
        response.headers_mut().insert("pitstop-version", "99".parse().unwrap());
        response
    })
    .await
}

fn config(legacy: &str, breaker: &str) -> String {
    format!(
        r#"
        [runtime]
        {breaker}

        [[routes]]
        prefix = "/legacy"
        upstream = "{legacy}"
        deadline_ms = 1000

        [[routes]]
        prefix = "/metered"
        upstream = "{legacy}"
        deadline_ms = 1000
        rate_limit = {{ per_second = 1, burst = 2 }}

        [[routes]]
        prefix = "/guarded"
        upstream = "{legacy}"
        deadline_ms = 1000
        auth = "jwt"

        [[routes]]
        prefix = "/gone"
        upstream = "http://{gone}"

        [[routes]]
        prefix = "/users"
        component = "user"
        "#,
        gone = crate::support::refusing_address(),
    )
}

#[tokio::test]
async fn an_upstream_is_served_under_the_gateways_rules() {
    let legacy = legacy_server().await;
    let lenient = "breaker = { consecutive_failures = 1000, min_calls = 1000 }";
    let server = Server::start_with(Some(&config(&legacy, lenient)), fresh_dir()).await;
    let authority = legacy.trim_start_matches("http://");

    // Forwarded as sent, with the platform's trace context, request id and
    // identity, and never a client's forged pitstop-* header or its token.
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = server
        .send_with(
            "POST",
            "/legacy/things?page=2",
            &[
                ("traceparent", trace),
                ("pitstop-subject", "forged"),
                ("x-forwarded-host", "forged.example"),
                ("x-forwarded-for", "10.6.6.6"),
                ("forwarded", "for=10.6.6.6"),
                ("x-custom", "kept"),
            ],
            "hello legacy",
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.headers["pitstop-component"], format!("upstream:{authority}").as_str());
    assert!(answer.headers.get("pitstop-version").is_none(), "no component version");
    assert_eq!(answer.headers["x-legacy"], "yes", "the upstream's headers come back");
    let echo = answer.json();
    assert_eq!(
        (echo["method"].as_str(), echo["path"].as_str()),
        (Some("POST"), Some("/legacy/things"))
    );
    assert_eq!(
        (echo["query"].as_str(), echo["body"].as_str()),
        (Some("page=2"), Some("hello legacy"))
    );
    let seen = &echo["headers"];
    assert_eq!(seen["pitstop-subject"], "tester", "the verified subject, not the forged one");
    assert_eq!(seen["pitstop-auth"], "jwt");
    assert!(seen.get("authorization").is_none(), "the token stays at the gateway: {seen}");
    assert_eq!(seen["x-custom"], "kept");
    assert_eq!(seen["host"], authority);
    let gateway_host = server.base.trim_start_matches("http://");
    assert_eq!(seen["x-forwarded-host"], gateway_host, "the client's host, not its forged header");
    assert_eq!(seen["x-forwarded-proto"], "http");
    for forged in ["x-forwarded-for", "forwarded"] {
        assert!(seen.get(forged).is_none(), "a client's {forged} is not passed on: {seen}");
    }

    // A path the upstream could read as another route's is refused.
    for odd in ["/legacy/x/../admin", "/legacy//admin", "/legacy/%2e%2e/admin", "/legacy/a%2Fb"] {
        let refused = server.get(odd).await;
        assert_eq!(refused.status, 400, "{odd}: {:?}", refused.body);
    }
    let forwarded = seen["traceparent"].as_str().unwrap();
    assert!(forwarded.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{forwarded}");
    assert_eq!(seen["x-request-id"], answer.headers["x-request-id"].to_str().unwrap());

    // Auth: writes need a JWT on this route as on any other.
    let anonymous = server.send_with("POST", "/legacy/x", &[("authorization", "")], "").await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(server.get("/legacy/read").await.status, 200, "reads are public");

    // The route's rate limit.
    let statuses: Vec<u16> = futures_statuses(&server, "/metered/x", 3).await;
    assert_eq!(statuses, [200, 200, 429]);

    // Deadline, unreachable upstream, oversized answer.
    let started = Instant::now();
    let slow = server.get("/legacy/slow").await;
    assert_eq!(slow.status, 504, "{:?}", slow.body);
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
    let gone = server.get("/gone/x").await;
    assert_eq!(gone.status, 503, "{:?}", gone.body);
    assert_eq!(server.get("/legacy/big").await.status, 502);
    let failed = server.get("/legacy/fail").await;
    assert_eq!(failed.status, 500, "an upstream's 500 is passed on");
    assert_eq!(failed.json()["error"], "legacy broke");

    // Metrics carry the upstream like a component.
    let metrics = server.metrics().await;
    let series = format!("component=\"upstream:{authority}\"");
    assert!(metrics.iter().any(|(name, _)| name.contains(&series)), "{series} in {metrics:?}");
}

/// `n` GETs of `path` one after the other, their statuses.
async fn futures_statuses(server: &Server, path: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(server.get(path).await.status);
    }
    statuses
}

/// A failing upstream opens its breaker (503 at once, `/ready` says so);
/// the components keep serving.
#[tokio::test]
async fn a_failing_upstream_opens_its_circuit() {
    let legacy = legacy_server().await;
    let strict = "breaker = { consecutive_failures = 3, open_ms = 60000 }";
    let server = Server::start_with(Some(&config(&legacy, strict)), fresh_dir()).await;
    for _ in 0..3 {
        assert_eq!(server.get("/legacy/fail").await.status, 500);
    }
    let refused = server.get("/legacy/things").await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(refused.error().contains("circuit open"), "{}", refused.error());
    let ready = server.get("/ready").await;
    assert_eq!(ready.status, 503);
    let authority = legacy.trim_start_matches("http://");
    assert_eq!(ready.json()["checks"][format!("upstream:{authority}")], "circuit open");
    assert_eq!(server.get("/users/usr_nobody").await.status, 404, "components still serve");
}

/// Besides a 5xx, a refused connection and a missed deadline count for an
/// upstream's breaker (docs/configuration.md), each upstream's apart.
#[tokio::test]
async fn refused_connections_and_timeouts_open_an_upstreams_circuit() {
    let legacy = legacy_server().await;
    let strict = "breaker = { consecutive_failures = 2, open_ms = 60000 }";
    let server = Server::start_with(Some(&config(&legacy, strict)), fresh_dir()).await;
    for _ in 0..2 {
        let refused = server.get("/gone/x").await;
        assert_eq!(refused.status, 503, "{}", String::from_utf8_lossy(&refused.body));
        assert!(!refused.error().contains("circuit open"), "{}", refused.error());
    }
    assert!(server.get("/gone/x").await.error().contains("circuit open"));
    // The legacy server's circuit is its own, still closed.
    assert_eq!(server.get("/legacy/things").await.status, 200);
    for _ in 0..2 {
        assert_eq!(server.get("/legacy/slow").await.status, 504, "its deadline is 1 s");
    }
    let open = server.get("/legacy/things").await;
    assert_eq!(open.status, 503);
    assert!(open.error().contains("circuit open"), "{}", open.error());
}

/// A sub-path of the upstream's route moves to a component while both
/// serve, without a restart; undeploying the component gives it back.
#[tokio::test]
async fn a_sub_path_moves_from_the_upstream_to_a_component_without_a_restart() {
    let legacy = legacy_server().await;
    let server = Server::start_with(Some(&config(&legacy, "")), fresh_dir()).await;
    assert_eq!(server.get("/legacy/hello").await.json()["path"], "/legacy/hello");

    let hello = test_components().join("hello.wasm");
    let deployed =
        server.cli(&["deploy", "hello", hello.to_str().unwrap(), "--route", "/legacy/hello"]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    // A sub-path keeps the policy of the upstream route it lies in.
    let guarded =
        server.cli(&["deploy", "guard", hello.to_str().unwrap(), "--route", "/guarded/in"]);
    assert!(guarded.status.success(), "{}", String::from_utf8_lossy(&guarded.stderr));
    let anonymous = server.send_with("GET", "/guarded/in", &[("authorization", "")], "").await;
    assert_eq!(anonymous.status, 401, "the /guarded route's jwt policy applies");
    let with_token = server.get("/guarded/in").await;
    assert_eq!(with_token.header("pitstop-component"), Some("guard"));
    let moved = server.get("/legacy/hello").await;
    assert_eq!(
        (moved.status, moved.headers["pitstop-component"].to_str().unwrap()),
        (200, "hello")
    );
    let rest = server.get("/legacy/other").await;
    assert_eq!(rest.json()["path"], "/legacy/other", "the rest stays with the upstream");

    let same = server.cli(&["deploy", "x", hello.to_str().unwrap(), "--route", "/legacy"]);
    assert!(!same.status.success(), "the upstream's own prefix cannot be taken");

    let undeployed = server.cli(&["undeploy", "hello"]);
    assert!(undeployed.status.success());
    assert_eq!(server.get("/legacy/hello").await.json()["path"], "/legacy/hello");
}

/// A route that names both targets or neither, a deadline on a component
/// route, or an upstream that is not plain `http://HOST[:PORT]` stops
/// `serve` with a message naming the route.
#[test]
fn bad_upstream_routes_are_refused_with_a_message() {
    let cases = [
        ("component = \"user\"\nupstream = \"http://127.0.0.1:9000\"", "not both"),
        ("auth = \"public\"", "give a component or an upstream"),
        ("component = \"user\"\ndeadline_ms = 100", "deadline_ms applies to upstream routes"),
        ("upstream = \"https://127.0.0.1:9000\"", "must be http://HOST[:PORT]"),
        ("upstream = \"http://127.0.0.1:9000/app\"", "must be http://HOST[:PORT]"),
        (
            "upstream = \"http://127.0.0.1:9000\"\n[[routes]]\nprefix = \"/b\"\n\
             upstream = \"http://127.0.0.1:9000\"\ndeadline_ms = 50",
            "give different deadline_ms",
        ),
    ];
    for (route, message) in cases {
        let config = format!("[[routes]]\nprefix = \"/legacy\"\n{route}\n");
        let stderr = crate::support::serve_refuses(&config);
        assert!(stderr.contains(message), "{route}: {stderr}");
        // Named: the route, or the upstream the routes share.
        let named = ["/legacy", "127.0.0.1:9000"].iter().any(|n| stderr.contains(n));
        assert!(named, "{route}: {stderr}");
    }
}

/// A client that goes away while its request is the breaker's probe does
/// not leave the circuit half-open for good: the probe is given back and
/// the next request closes the circuit.
#[tokio::test]
async fn a_client_that_goes_away_does_not_wedge_the_circuit() {
    use tokio::io::AsyncWriteExt;
    let legacy = legacy_server().await;
    let quick = "breaker = { consecutive_failures = 2, open_ms = 300 }";
    let server = Server::start_with(Some(&config(&legacy, quick)), fresh_dir()).await;
    for _ in 0..2 {
        assert_eq!(server.get("/legacy/fail").await.status, 500);
    }
    assert_eq!(server.get("/legacy/things").await.status, 503, "open");
    // `/ready` reports the circuit open until `open_ms` has passed.
    let upstream = legacy.trim_start_matches("http://").to_string();
    crate::support::eventually("the circuit half-open", Duration::from_secs(5), || async {
        let ready = server.get("/ready").await.json();
        let checks = ready["checks"].as_object().cloned().unwrap_or_default();
        let state = checks.iter().find(|(name, _)| name.contains(&upstream)).map(|c| c.1.clone());
        (state.as_ref().and_then(Value::as_str) == Some("ok")).then_some(())
    })
    .await;
    // The probe: a slow request whose client hangs up once the upstream
    // has it.
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let query = format!("probe={upstream}");
    let head = format!("GET /legacy/slow?{query} HTTP/1.1\r\nhost: {address}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    crate::support::eventually("the probe at the upstream", Duration::from_secs(5), || {
        let begun = SLOW_BEGUN.lock().unwrap().contains(&query);
        async move { begun.then_some(()) }
    })
    .await;
    drop(stream);
    // Given back, the next request is the probe and closes the circuit;
    // well before the upstream would have answered the first (3 s).
    let hung_up = Instant::now();
    crate::support::eventually("a 200 after the hang-up", Duration::from_secs(2), || async {
        (server.get("/legacy/things").await.status == 200).then_some(())
    })
    .await;
    assert!(hung_up.elapsed() < Duration::from_secs(2));
}

/// An upstream that sends requests back to the gateway (a proxy pointed at
/// it, or the gateway's own address by mistake) gets 508 on the first
/// return, instead of a recursion that takes every slot until deadlines
/// stop it; the proxy in between saw the request once.
#[tokio::test]
async fn a_request_that_comes_back_is_a_loop_not_a_recursion() {
    let gateway: Arc<OnceLock<String>> = Arc::default();
    let hops = Arc::new(AtomicUsize::new(0));
    let proxy = {
        let (gateway, hops) = (gateway.clone(), hops.clone());
        crate::support::loopback_server(move |parts: http::request::Parts, body: Bytes| {
            let (gateway, hops) = (gateway.clone(), hops.clone());
            async move {
                hops.fetch_add(1, Ordering::SeqCst);
                // Pass it back as a proxy would, `via` and all.
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<Full<Bytes>>();
                let uri = format!("{}{}", gateway.get().unwrap(), parts.uri.path());
                let mut request = http::Request::builder().method(parts.method).uri(uri);
                for (name, value) in &parts.headers {
                    if name != "host" {
                        request = request.header(name, value);
                    }
                }
                let answer = client.request(request.body(Full::new(body)).unwrap()).await.unwrap();
                let (parts, body) = answer.into_parts();
                let body = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
                http::Response::from_parts(parts, Full::new(body))
            }
        })
        .await
    };
    let config = format!(
        "[[routes]]\nprefix = \"/around\"\nupstream = \"{proxy}\"\nauth = \"public\"\n\
         deadline_ms = 5000\n"
    );
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    gateway.set(server.base.clone()).unwrap();

    let started = Instant::now();
    let answer = server.get("/around/and/around").await;
    assert_eq!(answer.status, 508, "{}", String::from_utf8_lossy(&answer.body));
    assert!(answer.error().contains("loop"), "{}", answer.error());
    assert_eq!(hops.load(Ordering::SeqCst), 1, "the proxy saw the request once");
    assert!(started.elapsed() < Duration::from_secs(2), "answered at once, not at a deadline");
    // A client's own `via` (another proxy in front) is passed on, not a loop.
    let through = server.send_with("GET", "/around/x", &[("via", "1.1 front-proxy")], "").await;
    assert_eq!(through.status, 508, "still one loop, found on its return");
    assert_eq!(hops.load(Ordering::SeqCst), 2);
}

/// A `/legacy/admin` route that needs a JWT inside a public `/legacy`, both
/// to one upstream: a path the upstream may read as lying in
/// `/legacy/admin` (an escaped letter, another letter case, a `;`
/// parameter, a `.json` suffix) is never forwarded without the token. An
/// escaped unreserved letter is decoded, and the path the upstream gets is
/// the one the gateway matched; the readings that only some servers share
/// are refused with 400 even with a token, as ambiguous.
#[tokio::test]
async fn paths_a_server_may_read_as_a_guarded_route_are_guarded_or_refused() {
    let legacy = legacy_server().await;
    let config = format!(
        r#"
        [[routes]]
        prefix = "/legacy/admin"
        upstream = "{legacy}"
        auth = "jwt"

        [[routes]]
        prefix = "/legacy"
        upstream = "{legacy}"
        auth = "public"
        "#
    );
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let anonymous =
        |path: &'static str| server.send_with("GET", path, &[("authorization", "")], "");

    assert_eq!(anonymous("/legacy/admin/x").await.status, 401, "the route itself");
    let public = anonymous("/legacy/administrators").await;
    assert_eq!(public.status, 200, "another segment is /legacy's");
    assert_eq!(public.json()["path"], "/legacy/administrators");

    // Escaped unreserved characters are the same path: the guarded route.
    for escaped in ["/legacy/%61dmin/x", "/legacy/adm%69n/x", "/legacy/%61%64%6D%69%6E"] {
        let refused = anonymous(escaped).await;
        assert_eq!(refused.status, 401, "{escaped}: {:?}", refused.body);
        let with_token = server.get(escaped).await;
        assert_eq!(with_token.status, 200, "{escaped}: {:?}", with_token.body);
        let seen = with_token.json()["path"].as_str().unwrap().to_string();
        assert!(seen.starts_with("/legacy/admin"), "forwarded as matched, not {seen}");
    }

    // Readings some servers share (case-insensitive routing, `;`
    // parameters, format suffixes): refused whatever the credentials.
    for ambiguous in [
        "/legacy/Admin/x",
        "/legacy/ADMIN",
        "/legacy/admin;x/y",
        "/legacy/admin;jsessionid=1",
        "/legacy/admin%3Bx/y",
        "/legacy/admin.json",
        "/legacy/%41dmin.json",
        "/legacy/admin./x",
    ] {
        for answer in [anonymous(ambiguous).await, server.get(ambiguous).await] {
            assert_eq!(answer.status, 400, "{ambiguous}: {:?}", answer.body);
            assert!(answer.error().contains("ambiguous"), "{ambiguous}: {}", answer.error());
        }
    }

    // Dot segments, escaped or not, are refused rather than resolved.
    for dots in ["/legacy/x/../admin", "/legacy/%2e%2e/admin", "/legacy/.%2E/admin/x"] {
        let refused = anonymous(dots).await;
        assert_eq!(refused.status, 400, "{dots}: {:?}", refused.body);
    }
}

/// Underscore spellings of the headers the gateway sets or strips
/// (`pitstop_subject`, `x_forwarded_for`, `x_real_ip`, ...) are dropped:
/// servers that read headers as CGI variables (WSGI, Rack, PHP) cannot tell
/// them from the real ones. Other underscore headers pass.
#[tokio::test]
async fn underscore_spellings_of_platform_and_forwarding_headers_are_dropped() {
    let legacy = legacy_server().await;
    let server = Server::start_with(Some(&config(&legacy, "")), fresh_dir()).await;
    let forged = [
        ("pitstop_subject", "forged"),
        ("pitstop_auth", "jwt"),
        ("x_forwarded_for", "10.6.6.6"),
        ("x_forwarded_host", "forged.example"),
        ("x_forwarded_proto", "https"),
        ("x_real_ip", "10.6.6.6"),
        ("x_request_id", "forged"),
        ("proxy_authorization", "Basic Zm9yZ2Vk"),
    ];
    let mut headers = forged.to_vec();
    headers.push(("x_custom_thing", "kept"));
    // A write, so the gateway verifies the token and sets the real subject.
    let answer = server.send_with("POST", "/legacy/things", &headers, "").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let seen = &answer.json()["headers"];
    for (name, _) in forged {
        assert!(seen.get(name).is_none(), "{name} reached the upstream: {seen}");
    }
    assert_eq!(seen["x_custom_thing"], "kept", "{seen}");
    assert_eq!(seen["pitstop-subject"], "tester");
}

/// A HEAD answer keeps the upstream's `content-length`: it says how large
/// the GET answer would be.
#[tokio::test]
async fn a_head_answer_keeps_its_content_length() {
    let legacy = legacy_server().await;
    let server = Server::start_with(Some(&config(&legacy, "")), fresh_dir()).await;
    let get = server.get("/legacy/sized").await;
    assert_eq!((get.status, get.header("content-length")), (200, Some("10")));
    let head = server.send("HEAD", "/legacy/sized", "").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("10"), "{:?}", head.headers);
    assert!(head.body.is_empty());
}

/// A client that sends its body slowly spends the upstream's deadline (it
/// counts from the request head): that 504 is the client's doing and does
/// not count toward the upstream's breaker, or a few slow uploads would cut
/// the upstream off for everyone.
#[tokio::test]
async fn a_deadline_spent_by_the_clients_slow_upload_does_not_open_the_circuit() {
    let legacy = legacy_server().await;
    let strict = "breaker = { consecutive_failures = 2, open_ms = 60000 }";
    let server = Server::start_with(Some(&config(&legacy, strict)), fresh_dir()).await;
    // The route's deadline is 1 s; the body comes after 1.2 s.
    let slow =
        || crate::support::slow_upload(&server.base, "/legacy/echo", Duration::from_millis(1200));
    let statuses = futures::future::join_all((0..3).map(|_| slow())).await;
    for status in statuses {
        assert!(status.contains(" 504 "), "{status}");
    }
    let after = server.get("/legacy/things").await;
    assert_eq!(after.status, 200, "the circuit stayed closed: {:?}", after.body);
}

/// An upstream takes at most `[runtime] max_concurrency` requests at once,
/// whichever of its routes they come through (docs/configuration.md); one
/// more is 503 at once, and a slot is free again when a request ends.
#[tokio::test]
async fn an_upstreams_slots_are_bounded_and_shared_by_its_routes() {
    let legacy = legacy_server().await;
    let server =
        Server::start_with(Some(&config(&legacy, "max_concurrency = 1")), fresh_dir()).await;
    let query = format!("slots={}", legacy.trim_start_matches("http://"));
    let slow = format!("/legacy/slow?{query}");
    let (held, (direct, metered, took)) = tokio::join!(server.get(&slow), async {
        crate::support::eventually(
            "the slow request at the upstream",
            Duration::from_secs(5),
            || {
                let begun = SLOW_BEGUN.lock().unwrap().contains(&query);
                async move { begun.then_some(()) }
            },
        )
        .await;
        let started = Instant::now();
        let direct = server.get("/legacy/things").await;
        let metered = server.get("/metered/things").await;
        (direct, metered, started.elapsed())
    });
    for refused in [&direct, &metered] {
        assert_eq!(refused.status, 503, "{}", String::from_utf8_lossy(&refused.body));
        assert!(refused.error().contains("every slot is taken"), "{}", refused.error());
    }
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    assert_eq!(held.status, 504, "the slow one ran into its deadline (1 s)");
    assert_eq!(server.get("/legacy/things").await.status, 200, "its slot is free again");
}
