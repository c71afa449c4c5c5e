//! `pitstop new`: a service made outside any checkout builds, tests as wasm
//! and deploys exactly as its README says, with `pitstop` on `PATH`.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};

use crate::dev::{DevLoop, get_text};
use crate::support::{OUTER_BUILD_VARS, Server, eventually, guest_cargo};

/// `PATH` with this build's `pitstop` first, as a user who installed it has.
pub fn path_with_pitstop() -> std::ffi::OsString {
    let bin = Path::new(env!("CARGO_BIN_EXE_pitstop")).parent().unwrap().to_path_buf();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&rest))).unwrap()
}

fn succeeded(what: &str, output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// In a temporary directory: `pitstop new inventory --events`, then the
/// README's build, test and deploy; the deployed route answers, counts its
/// visits and handles the `user.created` of the built-in user service. The
/// `cargo component build` output deploys as the next version.
#[tokio::test]
async fn a_new_service_builds_tests_and_deploys_outside_the_checkout() {
    let home = tempfile::tempdir().unwrap();
    let path = path_with_pitstop();
    let pitstop = |args: &[&str], dir: &Path| {
        std::process::Command::new("pitstop")
            .args(args)
            .current_dir(dir)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let created = succeeded("pitstop new", pitstop(&["new", "inventory", "--events"], home.path()));
    assert!(created.contains("pitstop deploy inventory"), "{created}");
    let dir = home.path().join("inventory");
    let config = std::fs::read_to_string(dir.join(".cargo/config.toml")).unwrap();
    assert!(config.contains(r#"runner = ["pitstop", "test-runner"]"#), "{config}");
    let again = pitstop(&["new", "inventory"], home.path());
    assert!(!again.status.success(), "an existing directory is refused");

    let cargo = |args: &[&str]| {
        let mut command = guest_cargo();
        command.args(args).current_dir(&dir).env("PATH", &path);
        succeeded(&format!("cargo {args:?}"), command.output().unwrap())
    };
    cargo(&["build", "--release", "--target", "wasm32-wasip2"]);
    let tests = cargo(&["test", "--target", "wasm32-wasip2"]);
    assert!(tests.contains("test result: ok. 4 passed"), "{tests}");
    cargo(&["component", "build", "--release"]);

    let server = Server::start().await;
    let wasm = "target/wasm32-wasip2/release/inventory.wasm";
    let deployed = server.cli(&[
        "deploy",
        "inventory",
        dir.join(wasm).to_str().unwrap(),
        "--route",
        "/inventory",
    ]);
    assert_eq!(
        succeeded("pitstop deploy", deployed).trim(),
        "deployed inventory version 1 (new component)"
    );
    let first = server.get("/inventory").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json(), json!({"service": "inventory", "visits": 1, "users_seen": 0}));

    let user = server.create_user("Ada", "ada@example.com").await;
    eventually("user.created reaches inventory", Duration::from_secs(10), || async {
        let seen: Value = server.get("/inventory").await.json();
        (seen["users_seen"] == 1).then_some(())
    })
    .await;

    let component = dir.join("target/wasm32-wasip1/release/inventory.wasm");
    let deployed = server.cli(&["deploy", "inventory", component.to_str().unwrap()]);
    assert_eq!(succeeded("pitstop deploy", deployed).trim(), "deployed inventory version 2");
    let answer = server.get("/inventory").await;
    assert_eq!((answer.status, answer.headers["pitstop-version"].to_str().unwrap()), (200, "2"));
    assert_eq!(answer.json()["users_seen"], 1, "the keyspace outlives the version");

    // docs/writing-a-service.md: its rust blocks, in order, are the whole
    // src/lib.rs of the inventory service it walks through.
    std::fs::write(dir.join("src/lib.rs"), guide_service()).unwrap();
    // `pitstop dev` builds, tests and deploys it in one cycle (--once; the
    // loop waits for changes), printing one line.
    let dev = |dir: &Path| {
        // Without the outer build's settings, as guest_cargo runs cargo.
        let mut dev = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"));
        for var in OUTER_BUILD_VARS {
            dev.env_remove(var);
        }
        let output = dev
            .args(["dev", "--once", "--admin-url", &server.admin_base, "--data-dir"])
            .arg(server.data_dir())
            .current_dir(dir)
            .env("PATH", &path)
            .output()
            .unwrap();
        succeeded("pitstop dev --once", output)
    };
    let cycle = dev(&dir);
    assert!(cycle.starts_with("dev: built in "), "{cycle}");
    assert!(cycle.contains("6 tests passed in"), "{cycle}");
    assert!(cycle.contains("deployed inventory version 3 in"), "{cycle}");
    let again = dev(&dir);
    assert!(again.contains("inventory version 3 unchanged in"), "{again}");

    // `pitstop dev --serve`: a server of its own, and a new cycle on every
    // saved change; a change that does not build leaves the last version
    // serving.
    // Waited for off the test's runtime, which the server's client needs.
    let (dir_, path_) = (dir.clone(), path.clone());
    tokio::task::spawn_blocking(move || {
        let (dir, path) = (dir_, path_);
        let mut watching = DevLoop::start(&dir, &path);
        let serving = watching.line_with("dev: serving on http://");
        let addr =
            serving["dev: serving on http://".len()..].split(',').next().unwrap().to_string();
        watching.line_with("deployed inventory version 1 at /inventory in");
        let (status, body) = get_text(&addr, "/inventory/lamp");
        assert_eq!((status, body.contains("no such article")), (404, true), "{body}");
        let source = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        let changed = source.replace("no such article", "not stocked here");
        std::fs::write(dir.join("src/lib.rs"), &changed).unwrap();
        watching.line_with("deployed inventory version 2 in");
        let (status, body) = get_text(&addr, "/inventory/lamp");
        assert_eq!((status, body.contains("not stocked here")), (404, true), "{body}");
        std::fs::write(dir.join("src/lib.rs"), changed.replace("fn get_stock(", "fn get_stock(("))
            .unwrap();
        watching.line_with("dev: build failed after");
        let (status, body) = get_text(&addr, "/inventory/lamp");
        assert_eq!((status, body.contains("not stocked here")), (404, true), "{body}");
        drop(watching);
        std::fs::write(dir.join("src/lib.rs"), &source).unwrap();
    })
    .await
    .unwrap();
    let stocked = server.send("PUT", "/inventory/book", r#"{"stock": 5}"#).await;
    assert_eq!(stocked.status, 200, "{:?}", stocked.body);
    let order = json!({"user_id": user, "items": [{"sku": "book", "quantity": 2, "price": 1250}]});
    assert_eq!(server.post("/orders", order).await.json()["status"], "CONFIRMED");
    eventually("order.confirmed takes the books off", Duration::from_secs(10), || async {
        let book: Value = server.get("/inventory/book").await.json();
        (book == json!({"sku": "book", "stock": 3})).then_some(())
    })
    .await;
}

/// The ```rust blocks of the guide, joined.
fn guide_service() -> String {
    let guide =
        std::fs::read_to_string(crate::support::repo_root().join("docs/writing-a-service.md"))
            .unwrap();
    let blocks: Vec<&str> = guide
        .split("```rust\n")
        .skip(1)
        .map(|block| block.split("\n```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 5, "the guide's code blocks");
    blocks.join("\n\n") + "\n"
}
