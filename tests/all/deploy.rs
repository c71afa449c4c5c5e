//! Hot deployment through the admin API: deploy, swap, roll back, remove,
//! persist, and never fail a request while doing it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Server, cold_dir, fresh_dir, rebuilt, test_components};

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(test_components().join(format!("{name}.wasm"))).unwrap()
}

fn trap_config() -> String {
    crate::support::single_component_config("trap", "trap", "", "/trap")
}

fn version_of(answer: &crate::support::Answer) -> u64 {
    answer.header("pitstop-version").expect("pitstop-version header").parse().unwrap()
}

#[tokio::test]
async fn deploy_swap_rollback_and_undeploy() {
    let server = Server::start().await;
    let listing = server.admin("GET", "/admin/components", "").await;
    assert_eq!(listing.status, 200);
    let listing = listing.json();
    let names: Vec<&str> =
        listing.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["order", "payment", "user"]);
    let user = listing.as_array().unwrap().iter().find(|c| c["name"] == "user").unwrap();
    assert_eq!(user["version"], 1);
    assert_eq!(user["routes"], json!(["/users"]));
    assert_eq!(user["state"], "active");
    assert_eq!(user["digest"].as_str().unwrap().len(), 64);
    assert!(user["size"].as_u64().unwrap() > 1000);
    assert!(user["deployed_at"].as_str().unwrap().ends_with('Z'));

    // A swap keeps the keyspace: same data, new code.
    let id = server.create_user("Lee", "lee@example.com").await;
    let swapped = server.admin("PUT", "/admin/components/user", rebuilt(&wasm("user"), 1)).await;
    assert_eq!(swapped.status, 200, "{}", String::from_utf8_lossy(&swapped.body));
    assert_eq!(swapped.json()["version"], 2);
    let fetched = server.get(&format!("/users/{id}")).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(version_of(&fetched), 2);

    let versions = server.admin("GET", "/admin/components/user/versions", "").await.json();
    assert_eq!(versions["active"], 2);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);

    let rolled = server.admin("POST", "/admin/components/user/rollback", "").await;
    assert_eq!(rolled.status, 200);
    assert_eq!(rolled.json()["version"], 1);
    assert_eq!(version_of(&server.get(&format!("/users/{id}")).await), 1);
    assert_eq!(server.admin("POST", "/admin/components/user/rollback", "").await.status, 409);

    // A brand-new component with a route is reachable at once.
    let created =
        server.admin("PUT", "/admin/components/probe?route=%2Fprobe", wasm("kvprobe")).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    assert_eq!(created.json()["version"], 1);
    assert_eq!(server.send("PUT", "/probe/kv/k", "kept").await.status, 200);
    assert_eq!(server.get("/probe/kv/k").await.header("pitstop-component"), Some("probe"));

    // Undeployed: its routes answer 404; its keyspace and history are kept
    // for a redeploy (or an activate: every_operation_can_be_undone).
    assert_eq!(server.admin("DELETE", "/admin/components/probe", "").await.status, 200);
    assert_eq!(server.get("/probe/kv/k").await.status, 404);
    for (method, path) in
        [("POST", "/admin/components/probe/rollback"), ("DELETE", "/admin/components/probe")]
    {
        assert_eq!(server.admin(method, path, "").await.status, 404, "{method} {path}");
    }
    let history = server.admin("GET", "/admin/components/probe/versions", "").await;
    assert_eq!(history.status, 200);
    assert_eq!(history.json()["active"], serde_json::Value::Null);
    let again = server.admin("PUT", "/admin/components/probe", wasm("kvprobe")).await;
    assert_eq!(again.status, 200, "the name is known: a new version, not a new component");
    assert_eq!(again.json()["version"], 2, "versions only grow");
    assert_eq!(&server.get("/probe/kv/k").await.body[..], b"kept");

    // Purged: the keyspace is gone too.
    assert_eq!(server.admin("DELETE", "/admin/components/probe?purge=true", "").await.status, 200);
    assert_eq!(
        server.admin("PUT", "/admin/components/probe?route=/probe", wasm("kvprobe")).await.status,
        201
    );
    assert_eq!(server.get("/probe/kv/k").await.status, 404);

    // Routes cannot be taken from another component.
    let taken = server.admin("PUT", "/admin/components/probe?route=/users", wasm("kvprobe")).await;
    assert_eq!(taken.status, 409);
    assert!(taken.error().contains("belongs to component user"), "{}", taken.error());
}

/// Nothing an operator does is a one-way door: a rollback can be rolled
/// forward, any stored version activated, an undeployed name served again
/// from its history (routes included) until it is purged; deploying the
/// active version's bytes again adds no version and says so.
#[tokio::test]
async fn every_operation_can_be_undone() {
    let server = Server::start().await;
    let versions = || async {
        let answer = server.admin("GET", "/admin/components/probe/versions", "").await;
        let listed = answer.json();
        let numbers: Vec<u64> = (listed["versions"].as_array().unwrap().iter())
            .map(|v| v["version"].as_u64().unwrap())
            .collect();
        (listed["active"].as_u64(), numbers)
    };
    let serving =
        || async { server.get("/probe/kv/k").await.header("pitstop-version").map(String::from) };
    let put = |bytes: Vec<u8>| server.admin("PUT", "/admin/components/probe?route=/probe", bytes);
    assert_eq!(put(wasm("kvprobe")).await.status, 201);
    assert_eq!(put(wasm("hello")).await.status, 200);
    assert_eq!(put(wasm("kvprobe")).await.json()["version"], 3);
    assert_eq!(serving().await.as_deref(), Some("3"));

    // Back, then forward again.
    let back = server.admin("POST", "/admin/components/probe/rollback", "").await;
    assert_eq!(back.json()["version"], 2);
    let forward = server.admin("POST", "/admin/components/probe/versions/3/activate", "").await;
    assert_eq!((forward.status, forward.json()["version"].clone()), (200, json!(3)));
    assert_eq!(serving().await.as_deref(), Some("3"));

    // The active bytes again: nothing deployed, no version added.
    let same = put(wasm("kvprobe")).await;
    assert_eq!(same.status, 200, "{}", String::from_utf8_lossy(&same.body));
    assert_eq!(
        (same.json()["version"].clone(), same.json()["unchanged"].clone()),
        (json!(3), json!(true))
    );
    assert_eq!(versions().await, (Some(3), vec![1, 2, 3]));

    // Undeployed, then served again from its history, with its route.
    assert_eq!(server.admin("DELETE", "/admin/components/probe", "").await.status, 200);
    assert_eq!(server.get("/probe/kv/k").await.status, 404);
    assert_eq!(versions().await, (None, vec![1, 2, 3]));
    let again = server.admin("POST", "/admin/components/probe/versions/1/activate", "").await;
    assert_eq!(again.status, 200, "{}", String::from_utf8_lossy(&again.body));
    assert_eq!(serving().await.as_deref(), Some("1"));

    // Bad versions are clear errors, and the active one stays.
    let missing = server.admin("POST", "/admin/components/probe/versions/9/activate", "").await;
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("no version 9"), "{}", missing.error());
    let nonsense = server.admin("POST", "/admin/components/probe/versions/x/activate", "").await;
    assert_eq!(nonsense.status, 400);
    assert_eq!(serving().await.as_deref(), Some("1"));

    // Purged, undeployed first or not: gone for good.
    assert_eq!(server.admin("DELETE", "/admin/components/probe", "").await.status, 200);
    let purged = server.admin("DELETE", "/admin/components/probe?purge=true", "").await;
    assert_eq!(purged.status, 200, "{}", String::from_utf8_lossy(&purged.body));
    assert_eq!(server.admin("GET", "/admin/components/probe/versions", "").await.status, 404);
    let gone = server.admin("POST", "/admin/components/probe/versions/1/activate", "").await;
    assert_eq!(gone.status, 404);
}

#[tokio::test]
async fn bad_uploads_leave_the_old_version_serving() {
    let server = Server::start().await;
    let id = server.create_user("Mo", "mo@example.com").await;
    let mut truncated = wasm("user");
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("garbage", b"definitely not wasm".to_vec(), 400, "not a WebAssembly component"),
        ("empty", Vec::new(), 400, "not a WebAssembly component"),
        ("core module", b"\0asm\x01\0\0\0".to_vec(), 400, "core module"),
        ("truncated", truncated, 400, "invalid WebAssembly component"),
        ("wrong world", wasm("wrong_world"), 422, "test:wrong/nowhere"),
    ];
    for (what, bytes, status, message) in cases {
        let answer = server.admin("PUT", "/admin/components/user", bytes).await;
        assert_eq!(answer.status, status, "{what}: {}", String::from_utf8_lossy(&answer.body));
        assert!(answer.error().contains(message), "{what}: {}", answer.error());
        let still = server.get(&format!("/users/{id}")).await;
        assert_eq!((still.status, version_of(&still)), (200, 1), "{what}: the old version serves");
    }
    let versions = server.admin("GET", "/admin/components/user/versions", "").await.json();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1, "no version was recorded");

    for name in ["User", "-x", "9lives", "a_b", &"a".repeat(64)] {
        let answer =
            server.admin("PUT", &format!("/admin/components/{name}"), wasm("kvprobe")).await;
        assert_eq!(answer.status, 400, "{name}");
        assert!(answer.error().contains("invalid component name"));
    }
    assert_eq!(
        server
            .admin("PUT", &format!("/admin/components/{}", "a".repeat(63)), wasm("kvprobe"))
            .await
            .status,
        201
    );
}

/// A component the platform cannot run is refused before it is compiled
/// (a 12 MB JavaScript component used to compile for 43 s first), in words
/// that say what is missing, and leaves nothing in the artifact cache; nor
/// does one refused after compiling (its `declare` never returns).
#[tokio::test]
async fn components_that_do_not_fit_are_refused_before_compiling() {
    let server = Server::start().await;
    let cache = server.data_dir().join("cache");
    let entries = || std::fs::read_dir(&cache).unwrap().count();
    let cached = entries();

    let wrong = wasm("wrong_world");
    let refused = server.admin("PUT", "/admin/components/wrong", wrong.clone()).await;
    assert_eq!(refused.status, 422);
    assert!(refused.error().contains("imports test:wrong/nowhere"), "{}", refused.error());
    assert!(refused.error().contains("it exports run"), "{}", refused.error());
    let slow = server.admin("PUT", "/admin/components/slow", wasm("slow_declare")).await;
    assert_eq!(slow.status, 422, "{}", String::from_utf8_lossy(&slow.body));

    assert_eq!(entries(), cached, "a refused component left a compiled artifact");
    let log = server.log_now().await;
    let digest = pitstop_host::runtime::artifacts::hex_sha256(&wrong);
    assert!(!log.contains(&digest), "compiled although refusable from its names");
    let versions = server.admin("GET", "/admin/components/wrong/versions", "").await;
    assert_eq!(versions.status, 404, "nothing was recorded");
}

/// Deploys of different names do not wait for each other: a component whose
/// `declare` computes until the platform gives up (2 s) used to hold the one
/// lock of every deploy, rollback and undeploy for that long.
#[tokio::test]
async fn a_deploy_whose_declare_loops_holds_up_no_other_name() {
    let server = Server::start().await;
    let bytes = wasm("slow_declare");
    let digest = pitstop_host::runtime::artifacts::hex_sha256(&bytes);
    let slow = async {
        let answer = server.admin("PUT", "/admin/components/slow?route=/slow", bytes).await;
        (answer, Instant::now())
    };
    let others = async {
        // Once the slow one is compiled, its declare runs (for 2 s).
        crate::support::eventually("slow_declare compiled", Duration::from_secs(30), || async {
            server.log().contains(&format!("compiled component digest=\"{digest}\"")).then_some(())
        })
        .await;
        let deployed =
            server.admin("PUT", "/admin/components/greeter?route=/greet", wasm("hello")).await;
        let rolled_back = server.admin("POST", "/admin/components/user/rollback", "").await;
        let undeployed = server.admin("DELETE", "/admin/components/order", "").await;
        (deployed, rolled_back, undeployed, Instant::now())
    };
    let ((slow, slow_done), (deployed, rolled_back, undeployed, others_done)) =
        tokio::join!(slow, others);
    assert_eq!(slow.status, 422, "{}", String::from_utf8_lossy(&slow.body));
    assert!(slow.error().contains("declare did not return in time"), "{}", slow.error());
    assert_eq!(deployed.status, 201, "{}", String::from_utf8_lossy(&deployed.body));
    assert_eq!(rolled_back.status, 409, "user has no earlier version");
    assert_eq!(undeployed.status, 200);
    assert!(
        others_done < slow_done,
        "the other names' changes waited for the slow deploy ({:?} after it)",
        others_done - slow_done
    );
    assert_eq!(server.get("/greet").await.status, 200);
    assert_eq!(server.get("/slow").await.status, 404, "the refused component was not kept");
}

/// Two names deploying at once to the same route: one gets it, the other
/// is refused, whatever the order their compiles finish in.
#[tokio::test]
async fn concurrent_deploys_cannot_both_take_a_route() {
    // A cold cache: the loser must be compiled here, not loaded.
    let server = Server::start_with(None, cold_dir()).await;
    let (first, second) = tokio::join!(
        server.admin("PUT", "/admin/components/one?route=/same", wasm("hello")),
        server.admin("PUT", "/admin/components/two?route=/same", wasm("kvprobe")),
    );
    let mut statuses = [first.status, second.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", first.error(), second.error());
    let (loser, loser_bytes) =
        if first.status == 409 { (&first, wasm("hello")) } else { (&second, wasm("kvprobe")) };
    assert!(loser.error().contains("route /same belongs to component"), "{}", loser.error());
    // Refused at the last check, after compiling: nothing of it is kept.
    let digest = pitstop_host::runtime::artifacts::hex_sha256(&loser_bytes);
    for dir in ["components", "cache"] {
        for entry in std::fs::read_dir(server.data_dir().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(!name.starts_with(&digest), "the refused component left {dir}/{name}");
        }
    }
}

/// The same new bytes deployed under several names at once: every deploy
/// succeeds (they used to share one temporary file name, and one of them
/// got 500 "No such file or directory" while cache entries were torn), and
/// a restart loads every one from the artifact cache.
#[tokio::test]
async fn the_same_bytes_deploy_under_many_names_at_once() {
    let data = cold_dir();
    let server = Server::start_with(None, data.clone()).await;
    let bytes = wasm("kvprobe");
    let deploys = (0..12).map(|i| {
        let bytes = bytes.clone();
        let server = &server;
        async move { server.admin("PUT", &format!("/admin/components/copy{i}"), bytes).await }
    });
    for answer in futures::future::join_all(deploys).await {
        assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    }
    let dir = server.data_dir();
    assert!(server.stop_with("TERM").await.success());
    let server = Server::start_with(None, data.clone()).await;
    let log = server.log_now().await;
    assert!(!log.contains("corrupt cache entry"), "a torn cache entry: {log}");
    assert_eq!(compiled_count(&log), 0, "a restart compiles nothing:\n{log}");
    let leftovers: Vec<String> = ["components", "cache"]
        .iter()
        .flat_map(|d| std::fs::read_dir(dir.join(d)).unwrap())
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test]
async fn uploads_over_the_limit_are_413() {
    let server = Server::start_with(Some("[admin]\nmax_upload = 1000\n"), fresh_dir()).await;
    let answer = server.admin("PUT", "/admin/components/user", wasm("user")).await;
    assert_eq!(answer.status, 413);
    assert_eq!(version_of(&server.get("/users/x").await), 1);
}

#[tokio::test]
async fn every_admin_call_needs_the_token() {
    let server = Server::start().await;
    let token_file = server.data_dir().join("admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.len() >= 32);
    let wrong = format!("Bearer {}x", token);
    for authorization in
        [None, Some("Bearer"), Some("Bearer nope"), Some(wrong.as_str()), Some("Basic dXNlcg==")]
    {
        for (method, path) in [
            ("GET", "/admin/components"),
            ("PUT", "/admin/components/user"),
            ("POST", "/admin/components/user/rollback"),
            ("DELETE", "/admin/components/user"),
        ] {
            let answer = server.admin_with(method, path, wasm("kvprobe"), authorization).await;
            assert_eq!(answer.status, 401, "{authorization:?} {method} {path}");
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        }
    }
    assert_eq!(
        server.get("/users/x").await.header("pitstop-version"),
        Some("1"),
        "nothing changed"
    );
}

/// `GET path` on the admin listener with exactly the `Host` header given
/// (none for `None`), over a raw socket: the status and the body.
async fn admin_with_host(server: &Server, path: &str, host: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.admin_base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let host = host.map(|h| format!("host: {h}\r\n")).unwrap_or_default();
    let head = format!("GET {path} HTTP/1.1\r\n{host}connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A page on any name the attacker controls, rebound to 127.0.0.1 (DNS
/// rebinding), would reach the admin listener as that name: only its own
/// names are served, everything else is 421 before the token is even
/// looked at. Loopback names and IP addresses (which no rebinding can
/// produce) are its own.
#[tokio::test]
async fn the_admin_listener_serves_only_its_own_host_names() {
    let server = Server::start().await;
    let port = server.admin_base.rsplit(':').next().unwrap().to_string();
    for foreign in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        for path in ["/metrics", "/", "/admin/components"] {
            let (status, body) = admin_with_host(&server, path, Some(&foreign)).await;
            assert_eq!(status, 421, "{foreign} {path}: {body}");
            let error: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(error["error"].as_str().unwrap().contains("allowed_hosts"), "{body}");
        }
    }
    for own in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LocalHost".to_string(),
        format!("[::1]:{port}"),
        "10.1.2.3:8081".to_string(),
    ] {
        assert_eq!(admin_with_host(&server, "/metrics", Some(&own)).await.0, 200, "{own}");
        let (status, _) = admin_with_host(&server, "/admin/components", Some(&own)).await;
        assert_eq!(status, 401, "{own}: served, and the token is still needed");
    }
    assert_eq!(admin_with_host(&server, "/metrics", None).await.0, 200, "no host: no browser");
    assert_eq!(server.admin("GET", "/admin/components", "").await.status, 200);
}

/// A name the admin listener is reached by besides its addresses
/// (`[admin] allowed_hosts`) is served, in any letter case and on any port.
#[tokio::test]
async fn an_admin_host_name_can_be_allowed() {
    let config = "[admin]\nallowed_hosts = [\"pitstop-admin.internal\"]\n";
    let server = Server::start_with(Some(config), fresh_dir()).await;
    for allowed in ["pitstop-admin.internal", "PITSTOP-Admin.internal:8081"] {
        assert_eq!(admin_with_host(&server, "/metrics", Some(allowed)).await.0, 200, "{allowed}");
    }
    let (status, _) = admin_with_host(&server, "/metrics", Some("other.internal")).await;
    assert_eq!(status, 421);
}

/// Eight clients loop while the component is swapped and rolled back: no
/// request fails, and once a swap call has returned every new request is
/// answered by the version it made active.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swaps_under_load_fail_no_request() {
    let server = std::sync::Arc::new(Server::start().await);
    let id = server.create_user("Nia", "nia@example.com").await;
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (server, running, id) = (server.clone(), running.clone(), id.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let answer = server.get(&format!("/users/{id}")).await;
                seen.push((started, Instant::now(), answer.status, version_of(&answer)));
            }
            seen
        }));
    }
    // (issued, returned, version made active)
    let mut changes = Vec::new();
    let user = wasm("user");
    for step in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let issued = Instant::now();
        let answer = if step == 3 {
            server.admin("POST", "/admin/components/user/rollback", "").await
        } else {
            server.admin("PUT", "/admin/components/user", rebuilt(&user, step)).await
        };
        assert!(answer.status == 200, "{}", String::from_utf8_lossy(&answer.body));
        changes.push((issued, Instant::now(), answer.json()["version"].as_u64().unwrap()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut responses = Vec::new();
    for client in clients {
        responses.extend(client.await.unwrap());
    }
    assert!(responses.len() > 100, "the clients kept the component busy: {}", responses.len());
    let failed: Vec<_> = responses.iter().filter(|r| r.2 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        responses.len(),
        &failed[..failed.len().min(5)]
    );
    for (i, (_, returned, version)) in changes.iter().enumerate() {
        let next_issued = changes.get(i + 1).map(|c| c.0);
        let window: Vec<_> = responses
            .iter()
            .filter(|(started, ended, _, _)| {
                started > returned && next_issued.is_none_or(|n| *ended < n)
            })
            .collect();
        assert!(!window.is_empty(), "requests were answered after change {i}");
        for (_, _, _, answered_by) in window {
            assert_eq!(
                answered_by, version,
                "after change {i} returned, version {version} answers"
            );
        }
    }
    let versions: Vec<u64> = changes.iter().map(|c| c.2).collect();
    assert_eq!(versions, [2, 3, 4, 3, 5, 6]);
}

#[tokio::test]
async fn a_request_that_started_before_a_swap_finishes_on_the_old_version() {
    let server = Server::start_with(Some(&trap_config()), fresh_dir()).await;
    let (slow, swapped) = tokio::join!(server.get("/trap/sleep/1500"), async {
        server.wait_in_flight("trap", 1.0).await;
        let answer = server.admin("PUT", "/admin/components/trap", rebuilt(&wasm("trap"), 1)).await;
        let after = server.get("/trap/ok").await;
        (answer, after)
    });
    let (answer, after) = swapped;
    assert_eq!(answer.json()["version"], 2);
    assert_eq!((after.status, version_of(&after)), (200, 2), "new requests go to the new version");
    assert_eq!(
        (slow.status, version_of(&slow)),
        (200, 1),
        "the slow request finished where it started"
    );
}

fn compiled_count(log: &str) -> usize {
    log.matches("compiled component").count() - log.matches("loaded compiled component").count()
}

/// Built-ins are deployed only on a data dir that never had their names: a
/// swapped built-in keeps its new version across a restart, and a removed
/// one stays removed.
#[tokio::test]
async fn built_ins_stay_as_the_operator_left_them() {
    let data = fresh_dir();
    let server = Server::start_with(None, data.clone()).await;
    let probe = wasm("kvprobe");
    let swapped = server.admin("PUT", "/admin/components/user", probe.clone()).await;
    assert_eq!(swapped.status, 200, "{}", String::from_utf8_lossy(&swapped.body));
    assert_eq!(server.admin("DELETE", "/admin/components/order", "").await.status, 200);
    assert!(server.stop_with("TERM").await.success());

    let server = Server::start_with(None, data.clone()).await;
    let listing = server.admin("GET", "/admin/components", "").await.json();
    let names: Vec<&str> =
        listing.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["payment", "user"], "order stays removed");
    let user = listing.as_array().unwrap().iter().find(|c| c["name"] == "user").unwrap();
    assert_eq!(user["version"], 2, "the swapped version, not the built-in again");
    assert_eq!(user["digest"], pitstop_host::runtime::artifacts::hex_sha256(&probe));
    assert_eq!(server.get("/orders/ord_x").await.status, 404);
}

#[tokio::test]
async fn a_restart_restores_versions_from_the_cache() {
    let data = cold_dir();
    let server = Server::start_with(None, data.clone()).await;
    assert_eq!(compiled_count(&server.log()), 3, "first start compiles the three built-ins");
    let probe = server.admin("PUT", "/admin/components/probe?route=/probe", wasm("kvprobe")).await;
    assert_eq!(probe.status, 201);
    assert_eq!(
        server.admin("PUT", "/admin/components/probe", wasm("trap")).await.json()["version"],
        2
    );
    assert_eq!(server.admin("POST", "/admin/components/probe/rollback", "").await.status, 200);
    let before = server.admin("GET", "/admin/components", "").await.json();
    let history = server.admin("GET", "/admin/components/probe/versions", "").await.json();
    assert!(server.stop_with("TERM").await.success());

    let server = Server::start_with(None, data.clone()).await;
    let log = server.log();
    assert_eq!(compiled_count(&log), 0, "a restart compiles nothing:\n{log}");
    assert_eq!(log.matches("loaded compiled component from cache").count(), 4);
    assert_eq!(server.admin("GET", "/admin/components", "").await.json(), before);
    assert_eq!(server.admin("GET", "/admin/components/probe/versions", "").await.json(), history);
    let answer = server.get("/probe/keys").await;
    assert_eq!((answer.status, version_of(&answer)), (200, 1), "the rolled-back version serves");
    assert!(server.stop_with("TERM").await.success());

    // A corrupt cache entry is detected, rebuilt, and not trusted.
    for entry in std::fs::read_dir(data.path().join("data/cache")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            corrupt(&path);
        }
    }
    let server = Server::start_with(None, data.clone()).await;
    let log = server.log();
    assert_eq!(log.matches("corrupt cache entry").count(), 4, "{log}");
    assert_eq!(compiled_count(&log), 4);
    assert_eq!(server.get("/probe/keys").await.status, 200);
    let id = server.create_user("Oz", "oz@example.com").await;
    assert_eq!(server.get(&format!("/users/{id}")).await.status, 200);
    assert!(server.stop_with("TERM").await.success());

    // Rebuilt means written again: the next start compiles nothing.
    let server = Server::start_with(None, data.clone()).await;
    let log = server.log_now().await;
    assert_eq!(compiled_count(&log), 0, "{log}");
    assert!(!log.contains("corrupt cache entry"), "{log}");
}

fn corrupt(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// A version whose stored bytes and artifact are lost does not keep the rest
/// of the platform from starting.
#[tokio::test]
async fn a_component_that_cannot_be_restored_does_not_block_the_others() {
    let data = fresh_dir();
    let server = Server::start_with(None, data.clone()).await;
    let probe = server.admin("PUT", "/admin/components/probe?route=/probe", wasm("kvprobe")).await;
    assert_eq!(probe.status, 201);
    let listing = server.admin("GET", "/admin/components", "").await.json();
    let digest =
        listing.as_array().unwrap().iter().find(|c| c["name"] == "probe").unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string();
    assert!(server.stop_with("TERM").await.success());
    for dir in ["components", "cache"] {
        for entry in std::fs::read_dir(data.path().join("data").join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_str().unwrap().starts_with(&digest) {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
    let server = Server::start_with(None, data).await;
    assert!(server.log().contains("cannot restore"), "{}", server.log());
    assert_eq!(server.get("/probe/keys").await.status, 404);
    server.create_user("Pat", "pat@example.com").await;
}

/// A component deployed with `?route=` cannot carve a sub-path out of
/// another component's route (`/users/x` would take part of the user
/// service over): 409. A prefix that is not one (no leading `/`) or is not
/// normalised (`..`, `.`, percent-encoding), which the gateway would never
/// match as written, is a malformed request: 400.
#[tokio::test]
async fn routes_cannot_carve_into_another_component_or_hide_behind_dots() {
    let server = Server::start().await;
    let inside = "/admin/components/probe?route=/users/x";
    let carved = server.admin("PUT", inside, wasm("kvprobe")).await;
    assert_eq!(carved.status, 409, "{}", String::from_utf8_lossy(&carved.body));
    assert!(
        carved.error().contains("inside the route /users of component user"),
        "{}",
        carved.error()
    );
    for bad in ["/h-x/../users", "/a/./b", "/%2e%2e/users", "/a%2Fb"] {
        let path = format!("/admin/components/probe?route={}", bad.replace('%', "%25"));
        let refused = server.admin("PUT", &path, wasm("kvprobe")).await;
        assert_eq!(refused.status, 400, "{bad}: {}", String::from_utf8_lossy(&refused.body));
        assert!(refused.error().contains("normalised"), "{bad}: {}", refused.error());
    }
    let unrooted =
        server.admin("PUT", "/admin/components/probe?route=probe", wasm("kvprobe")).await;
    assert_eq!(unrooted.status, 400, "{}", String::from_utf8_lossy(&unrooted.body));
    // The user service still answers its whole route.
    assert_eq!(server.get("/users/x").await.header("pitstop-component"), Some("user"));
    // Its own fresh prefix is fine.
    let own = server.admin("PUT", "/admin/components/probe?route=/probe", wasm("kvprobe")).await;
    assert_eq!(own.status, 201, "{}", String::from_utf8_lossy(&own.body));
}

/// `?route=` gives a component the listed prefixes in place of those of its
/// earlier deploys; a deploy without it keeps them.
#[tokio::test]
async fn route_replaces_earlier_routes_and_its_absence_keeps_them() {
    let server = Server::start().await;
    let first =
        server.admin("PUT", "/admin/components/probe?route=/a&route=/b", wasm("kvprobe")).await;
    assert_eq!(first.status, 201, "{}", String::from_utf8_lossy(&first.body));
    for prefix in ["/a", "/b"] {
        assert_eq!(server.get(&format!("{prefix}/keys")).await.status, 200, "{prefix}");
    }
    let moved = server.admin("PUT", "/admin/components/probe?route=/c", wasm("kvprobe")).await;
    assert_eq!(moved.status, 200, "{}", String::from_utf8_lossy(&moved.body));
    for prefix in ["/a", "/b"] {
        assert_eq!(
            server.get(&format!("{prefix}/keys")).await.status,
            404,
            "{prefix} was replaced"
        );
    }
    assert_eq!(server.get("/c/keys").await.status, 200);
    let kept = server.admin("PUT", "/admin/components/probe", wasm("trap")).await;
    assert_eq!(kept.status, 200, "{}", String::from_utf8_lossy(&kept.body));
    let answer = server.get("/c/ok").await;
    assert_eq!((answer.status, version_of(&answer)), (404, 3), "the new version at the kept route");
    let listing = server.admin("GET", "/admin/components", "").await.json();
    let probe = listing.as_array().unwrap().iter().find(|c| c["name"] == "probe").unwrap();
    assert_eq!(probe["routes"], serde_json::json!(["/c"]));
    // The prefixes it gave up are free for another component.
    let other = server.admin("PUT", "/admin/components/other?route=/a", wasm("kvprobe")).await;
    assert_eq!(other.status, 201, "{}", String::from_utf8_lossy(&other.body));
}
