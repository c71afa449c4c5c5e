//! The `pitstop` admin subcommands and `serve --watch`.

use std::time::{Duration, Instant};

use crate::support::{Server, fresh_dir, test_components};

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "command failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A deploy that takes a while (a big interpreter compiling; here a
/// component whose `declare` never returns, refused after 2 s) says so on
/// stderr with the time elapsed, instead of hanging silently; a quick one
/// prints nothing there.
#[tokio::test]
async fn a_slow_deploy_shows_that_it_is_working() {
    let server = Server::start().await;
    let slow = test_components().join("slow_declare.wasm");
    let output = server.cli(&["deploy", "slow", slow.to_str().unwrap()]);
    assert!(!output.status.success(), "a declare that never returns is refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("deploying slow (0.1 MB): uploading and compiling: 1 s so far"),
        "{stderr}"
    );
    let quick = test_components().join("hello.wasm");
    let output = server.cli(&["deploy", "quick", quick.to_str().unwrap()]);
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stderr), "", "a quick deploy is quiet");
}

#[tokio::test]
async fn the_cli_drives_the_admin_api() {
    let server = Server::start().await;
    let probe = test_components().join("kvprobe.wasm");
    let trap = test_components().join("trap.wasm");
    let (probe, trap) = (probe.to_str().unwrap(), trap.to_str().unwrap());

    let out = stdout(&server.cli(&["deploy", "probe", probe, "--route", "/probe"]));
    assert_eq!(out.trim(), "deployed probe version 1 (new component)");
    assert_eq!(server.get("/probe/keys").await.status, 200);

    let out = stdout(&server.cli(&["components"]));
    assert!(out.starts_with("NAME"), "{out}");
    let probe_line = out.lines().find(|l| l.starts_with("probe ")).expect(&out);
    assert!(probe_line.contains("/probe"), "{probe_line}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&server.cli(&["components", "--json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);

    assert_eq!(stdout(&server.cli(&["deploy", "probe", trap])).trim(), "deployed probe version 2");
    let out = stdout(&server.cli(&["versions", "probe"]));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().last().unwrap().contains('*'), "version 2 is marked active: {out}");
    assert_eq!(
        stdout(&server.cli(&["rollback", "probe"])).trim(),
        "probe rolled back to version 1"
    );
    assert_eq!(
        stdout(&server.cli(&["activate", "probe", "2"])).trim(),
        "probe version 2 is active"
    );
    assert_eq!(
        stdout(&server.cli(&["deploy", "probe", trap])).trim(),
        "probe version 2 is active with these bytes already: nothing deployed"
    );
    assert_eq!(
        stdout(&server.cli(&["undeploy", "probe"])).trim(),
        "probe undeployed (keyspace kept)"
    );
    let out = stdout(&server.cli(&["versions", "probe"]));
    assert!(
        out.ends_with(
            "probe is undeployed; `pitstop activate probe VERSION` serves a version again\n"
        ),
        "{out}"
    );
    assert_eq!(
        stdout(&server.cli(&["activate", "probe", "1"])).trim(),
        "probe version 1 is active"
    );
    assert_eq!(server.get("/probe/keys").await.status, 200, "served again, with its route");
    assert_eq!(
        stdout(&server.cli(&["purge", "probe"])).trim(),
        "probe purged: history and keyspace dropped"
    );
    assert_eq!(server.get("/probe/keys").await.status, 404);

    let failed = server.cli(&["rollback", "probe"]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("404") && stderr.contains("not deployed"), "{stderr}");

    let denied = server.cli(&["components", "--admin-token", "wrong"]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));
}

#[tokio::test]
async fn serve_watch_deploys_changed_files() {
    let watched = tempfile::TempDir::new().unwrap();
    let server = Server::start_with_args(
        None,
        fresh_dir(),
        &["--watch".as_ref(), watched.path().as_os_str()],
    )
    .await;
    let target = watched.path().join("probe.wasm");
    std::fs::copy(test_components().join("kvprobe.wasm"), &target).unwrap();
    wait_for_version(&server, "probe", 1).await;
    // A new name gets the route /NAME, and the log says so.
    assert_eq!(server.get("/probe/keys").await.header("pitstop-component"), Some("probe"));
    assert!(server.log().contains("watch: deployed, new, at /probe"), "{}", server.log());
    // One whose /NAME another component has is deployed without a route.
    std::fs::copy(test_components().join("hello.wasm"), watched.path().join("users.wasm")).unwrap();
    wait_for_version(&server, "users", 1).await;
    assert!(server.log().contains("watch: deployed, new, at no route"), "{}", server.log());
    assert_eq!(server.get("/users/usr_x").await.header("pitstop-component"), Some("user"));
    // A change is a new version; a broken file deploys nothing.
    std::fs::write(&target, b"half-written garbage").unwrap();
    crate::support::eventually("the broken file is reported", Duration::from_secs(20), || async {
        server.log().contains("watch: not deployed").then_some(())
    })
    .await;
    wait_for_version(&server, "probe", 1).await;
    std::fs::copy(test_components().join("trap.wasm"), &target).unwrap();
    wait_for_version(&server, "probe", 2).await;
    assert!(server.log().contains("watch: not deployed"), "the broken file was reported");
}

async fn wait_for_version(server: &Server, name: &str, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listing = server.admin("GET", "/admin/components", "").await.json();
        let found = listing
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["version"].clone());
        if found == Some(version.into()) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never reached version {version}: {listing}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Without a token to send, the CLI says where it looked instead of
/// calling the API with none (an empty token file used to be sent as an
/// empty token, and came back 401).
#[test]
fn the_cli_without_a_token_says_how_to_give_one() {
    let dir = crate::support::cold_dir();
    let admin = format!("http://{}", crate::support::refusing_address());
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
            .args(["components", "--admin-url", &admin, "--data-dir"])
            .arg(dir.path())
            .env_remove("PITSTOP_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    for _ in ["missing", "empty"] {
        let output = run();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains("no admin token: run `pitstop login URL` once"), "{stderr}");
        assert!(stderr.contains("pass --admin-token"), "{stderr}");
        std::fs::write(dir.path().join("admin.token"), "\n").unwrap();
    }
}

/// A refused deploy prints one line, `error: ` and why, and exits non-zero,
/// even with `RUST_BACKTRACE=1` (before, ~30 backtrace frames followed); so
/// does a local mistake (a missing file).
#[tokio::test]
async fn a_failed_command_prints_one_line_whatever_rust_backtrace_says() {
    let server = Server::start().await;
    let wrong = test_components().join("wrong_world.wasm");
    let missing = server.data_dir().join("no-such.wasm");
    for file in [wrong.as_path(), missing.as_path()] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
            .args(["deploy", "x"])
            .arg(file)
            .args(["--admin-url", &server.admin_base, "--data-dir"])
            .arg(server.data_dir())
            .env("RUST_BACKTRACE", "1")
            .env_remove("PITSTOP_ADMIN_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line, no backtrace: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
}

/// Every column of `components` and `versions` lines up with its title,
/// whatever the lengths of names, routes and sizes: a left-aligned column's
/// cells start where its title starts, a right-aligned one's end where its
/// title ends.
#[tokio::test]
async fn the_tables_line_up() {
    let server = Server::start().await;
    let hello = test_components().join("hello.wasm");
    let trap = test_components().join("trap.wasm");
    let name = "a-component-with-a-rather-long-name";
    let routes = ["--route", "/first-of-several-routes", "--route", "/second"];
    let deploy = |file: &std::path::Path| {
        let mut args = vec!["deploy", name, file.to_str().unwrap()];
        args.extend(routes);
        stdout(&server.cli(&args));
    };
    deploy(&hello);
    deploy(&trap);

    let components = stdout(&server.cli(&["components"]));
    assert_aligned(&components, &["VERSION", "SIZE"], &[]);
    assert!(components.contains("/first-of-several-routes,/second"), "{components}");
    let versions = stdout(&server.cli(&["versions", name]));
    assert_aligned(&versions, &["VERSION", "SIZE"], &["ACTIVE"]);
    assert_eq!(versions.lines().count(), 3, "{versions}");
}

/// Checks `table` (a header line, then rows) column by column; the cells of
/// a column in `may_be_empty` are not looked at.
fn assert_aligned(table: &str, right_aligned: &[&str], may_be_empty: &[&str]) {
    let mut lines = table.lines();
    let header = lines.next().expect(table);
    let mut columns = Vec::new(); // (start, end, right-aligned)
    let mut at = 0;
    for title in header.split_whitespace() {
        let start = at + header[at..].find(title).unwrap();
        at = start + title.len();
        if !may_be_empty.contains(&title) {
            columns.push((start, at, right_aligned.contains(&title)));
        }
    }
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty(), "{table}");
    for row in rows {
        let char_at = |i: usize| row.as_bytes().get(i).copied().unwrap_or(b' ');
        for &(start, end, right) in &columns {
            let (inside, outside) =
                if right { (end - 1, end) } else { (start, start.wrapping_sub(1)) };
            assert_ne!(char_at(inside), b' ', "column at {start} in {row:?} of\n{table}");
            if outside != usize::MAX {
                assert_eq!(char_at(outside), b' ', "column at {start} in {row:?} of\n{table}");
            }
        }
    }
}

/// `pitstop --version` names the command, not the crate.
#[test]
fn the_version_names_the_command() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("pitstop {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// A reader that goes away before the listing is printed (`pitstop
/// components | true`) ends the command quietly, not in a panic.
#[tokio::test]
async fn output_to_a_closed_pipe_is_not_a_crash() {
    let server = Server::start().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
        .args(["components", "--admin-url", &server.admin_base, "--data-dir"])
        .arg(server.data_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the command has its answer from the admin API.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `pitstop init` writes a config that `serve --strict` runs as it is,
/// and never overwrites one.
#[tokio::test]
async fn init_writes_a_config_that_starts_as_it_is() {
    let dir = fresh_dir();
    let init = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
            .arg("init")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = stdout(&init());
    assert!(out.starts_with("wrote pitstop.toml"), "{out}");
    let written = std::fs::read_to_string(dir.path().join("pitstop.toml")).unwrap();
    assert!(written.contains("# max_host_memory = "), "every option is in it, commented out");
    let again = init();
    assert!(!again.status.success(), "an existing config is kept");
    assert!(String::from_utf8_lossy(&again.stderr).contains("creating pitstop.toml"));

    let server = Server::start_with_args(Some(&written), fresh_dir(), &["--strict".as_ref()]).await;
    assert_eq!(server.get("/users/usr_x").await.header("pitstop-component"), Some("user"));
}

/// `pitstop login URL`, the token on stdin, lets the admin commands find
/// the server from any directory; a token the server refuses is not saved;
/// the saved token is readable by its owner only; `logout` forgets it.
#[tokio::test]
async fn login_lets_the_cli_find_the_server_from_any_directory() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start().await;
    let (config, elsewhere) = (fresh_dir(), fresh_dir());
    let token = std::fs::read_to_string(server.data_dir().join("admin.token")).unwrap();
    let cli = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
            .args(args)
            .current_dir(elsewhere.path())
            .env("XDG_CONFIG_HOME", config.path())
            .env_remove("PITSTOP_ADMIN_URL")
            .env_remove("PITSTOP_ADMIN_TOKEN")
            .env_remove("PITSTOP_DATA_DIR")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let saved = config.path().join("pitstop/login.toml");

    let lost = cli(&["components"], "");
    assert!(!lost.status.success());
    assert!(String::from_utf8_lossy(&lost.stderr).contains("pitstop login URL"));

    let refused = cli(&["login", &server.admin_base], "not-the-token\n");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    assert!(!saved.exists(), "a refused token was saved");

    let out = stdout(&cli(&["login", &server.admin_base], &token));
    assert!(out.starts_with(&format!("logged in to {}", server.admin_base)), "{out}");
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let listed = stdout(&cli(&["components"], ""));
    assert!(listed.lines().any(|line| line.starts_with("user ")), "{listed}");

    assert_eq!(stdout(&cli(&["logout"], "")).trim(), "logged out: the saved login is gone");
    assert!(!cli(&["components"], "").status.success());
}
