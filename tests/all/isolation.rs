//! Components are isolated from each other: keyspaces, failures, builds.

use std::path::Path;

use crate::support::{Server, fresh_dir, guest_cargo_in, repo_root, test_components};

fn probe_config(dir: &Path) -> String {
    let probe = dir.join("kvprobe.wasm");
    let trap = dir.join("trap.wasm");
    format!(
        r#"
        [components.probe-a]
        path = "{probe}"
        [components.probe-b]
        path = "{probe}"
        [components.trap]
        path = "{trap}"

        [[routes]]
        prefix = "/a"
        component = "probe-a"
        [[routes]]
        prefix = "/b"
        component = "probe-b"
        [[routes]]
        prefix = "/trap"
        component = "trap"
        [[routes]]
        prefix = "/users"
        component = "user"

        [runtime]
        deadline_ms = 1000
        "#,
        probe = probe.display(),
        trap = trap.display(),
    )
}

#[tokio::test]
async fn each_component_sees_only_its_own_keyspace() {
    let server = Server::start_with(Some(&probe_config(test_components())), fresh_dir()).await;
    server.create_user("Jo", "jo@example.com").await;

    assert_eq!(server.send("PUT", "/a/kv/shared", "from a").await.status, 200);
    assert_eq!(server.send("PUT", "/b/kv/shared", "from b").await.status, 200);
    assert_eq!(&server.get("/a/kv/shared").await.body[..], b"from a");
    assert_eq!(&server.get("/b/kv/shared").await.body[..], b"from b");

    assert_eq!(server.send("PUT", "/a/kv/only-a", "x").await.status, 200);
    assert_eq!(server.get("/b/kv/only-a").await.status, 404);

    // Listing everything shows a component its own keys and nothing else:
    // not the other probe's, not the user service's.
    let keys = server.get("/b/keys").await.json();
    assert_eq!(keys, serde_json::json!(["shared"]));
    let keys = server.get("/a/keys").await.json();
    assert_eq!(keys, serde_json::json!(["only-a", "shared"]));
    for i in 0..5 {
        server.send("PUT", &format!("/a/kv/page-{i}"), "p").await;
    }
    let paged = server.get("/a/keys?page-").await.json();
    assert_eq!(paged.as_array().unwrap().len(), 5, "cursor paging returns every key once: {paged}");

    for expected in 1..=3 {
        assert_eq!(server.send("POST", "/a/incr/hits", "").await.json(), expected);
    }
    assert_eq!(&server.get("/a/kv/hits").await.body[..], b"3");
}

#[tokio::test]
async fn a_trapping_component_gets_500_and_the_rest_keeps_serving() {
    let server = Server::start_with(Some(&probe_config(test_components())), fresh_dir()).await;
    for path in ["/trap/panic", "/trap/unreachable"] {
        let answer = server.get(path).await;
        assert_eq!(answer.status, 500, "{path}");
        assert!(answer.error().contains("trap"), "{path}: {}", answer.error());
        // The same component answers its next request from a fresh instance,
        // and other components never noticed.
        assert_eq!(server.get("/trap/ok").await.status, 200);
        server.create_user(&format!("after {path}"), &format!("{}@example.com", path.len())).await;
    }
    assert!(
        server.log().contains("the trap component panics on purpose"),
        "guest stderr reaches the log"
    );
}

#[tokio::test]
async fn a_looping_component_is_stopped_at_its_deadline() {
    let server = Server::start_with(Some(&probe_config(test_components())), fresh_dir()).await;
    let started = std::time::Instant::now();
    let (looped, other) = tokio::join!(server.get("/trap/loop"), async {
        server.wait_in_flight("trap", 1.0).await;
        server.get("/a/keys").await
    });
    assert_eq!(looped.status, 504);
    assert!(looped.error().contains("did not answer within 1000 ms"), "{}", looped.error());
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(2), "stopped after {took:?}, deadline 1 s");
    assert_eq!(other.status, 200, "other components answer while one loops");
    assert_eq!(server.get("/trap/ok").await.status, 200);
}

/// `cargo component build` output (wasm32-wasip1 + the preview1 adapter)
/// loads and serves just like the native wasm32-wasip2 build.
#[tokio::test]
async fn cargo_component_builds_load_too() {
    let root = repo_root();
    let target = root.join("target").join("wasm-components-p1");
    let output = guest_cargo_in(
        &["component", "build", "--release", "-p", "user"],
        &root.join("components/Cargo.toml"),
        &target,
    )
    .output()
    .expect("running cargo component (install it: cargo install cargo-component --locked)");
    assert!(
        output.status.success(),
        "cargo component build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let wasm = target.join("wasm32-wasip1").join("release").join("user.wasm");
    let config = format!("[components.user]\npath = \"{}\"\n", wasm.display());
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let id = server.create_user("Kim", "kim@example.com").await;
    assert_eq!(server.get(&format!("/users/{id}")).await.status, 200);
}

#[tokio::test]
async fn a_guest_gets_no_files_environment_or_network() {
    let server = Server::start_with(Some(&probe_config(test_components())), fresh_dir()).await;
    // A port that listens: were the guest granted the network, it would
    // connect, and the kernel would queue the connection for accept.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let report = server.get(&format!("/trap/escape/{port}")).await.json();
    for denied in ["file", "dir", "tcp"] {
        assert!(report[denied].as_str().unwrap().starts_with("Err("), "{denied}: {report}");
    }
    assert_eq!(report["env"], 0, "{report}");
    listener.set_nonblocking(true).unwrap();
    let reached = listener.accept();
    assert!(
        reached.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the guest reached the listener: {reached:?}"
    );
}
