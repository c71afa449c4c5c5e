//! The polyglot examples in `examples/`, built with their real toolchains
//! (componentize-py from PyPI, componentize-js from npm; `scripts/setup
//! --tests` installs them), deploy through the admin API into a running
//! `pitstop serve` and answer as their READMEs say.
//!
//! Each example is built once per test run, the three at once, and compiled
//! once by a `pitstop serve` of its own; every test's server then starts
//! with that artifact cache (as [`crate::support::fresh_dir`] does for the
//! test components), since a debug host takes 10-40 s to compile each of
//! these 12-18 MB components.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tempfile::TempDir;

use crate::support::{Answer, Server, cold_dir, repo_root};

const EXAMPLES: [&str; 3] = ["python-hello", "js-hello", "http-hello"];

/// An example built and compiled.
struct Built {
    /// The component its `build.sh` wrote.
    wasm: PathBuf,
    /// An artifact cache holding it (and the built-ins) compiled.
    cache: PathBuf,
}

/// `examples/NAME` built and compiled, or a panic with why not (a failed
/// build's stderr). The first call builds all three, in parallel.
fn example(name: &str) -> &'static Built {
    static ALL: OnceLock<HashMap<&'static str, Result<Built, String>>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        let run = run_dir();
        std::thread::scope(|scope| {
            let builds: Vec<_> = EXAMPLES
                .iter()
                .map(|&name| (name, scope.spawn(|| build_and_compile(name, &run))))
                .collect();
            builds
                .into_iter()
                .map(|(name, build)| {
                    let built =
                        build.join().unwrap_or_else(|_| Err(format!("building {name} panicked")));
                    (name, built)
                })
                .collect()
        })
    });
    match &all[name] {
        Ok(built) => built,
        Err(why) => panic!("{why}"),
    }
}

/// `target/tmp/examples-PID`, this run's builds and caches. Statics are
/// never dropped, so earlier runs' directories are removed here once their
/// process is gone.
fn run_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("examples-")) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = tmp.join(format!("examples-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `examples/NAME/build.sh` into `run`, then compiled by a `pitstop serve`
/// deploying it at start-up (every component is compiled and cached before
/// the addresses are printed).
fn build_and_compile(name: &str, run: &Path) -> Result<Built, String> {
    let wasm = run.join(format!("{name}.wasm"));
    let started = Instant::now();
    let script = repo_root().join("examples").join(name).join("build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(&wasm)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "examples/{name}/build.sh failed ({}); its stderr:\n{}\nits stdout:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout),
        ));
    }
    let size = std::fs::metadata(&wasm)
        .map_err(|e| {
            format!("examples/{name}/build.sh succeeded but wrote no {}: {e}", wasm.display())
        })?
        .len();
    eprintln!("examples: built {name} in {:.1?} ({:.1} MB)", started.elapsed(), size as f64 / 1e6);

    let started = Instant::now();
    let dir = run.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("compile.toml");
    std::fs::write(&config, format!("[components.{name}]\npath = \"{}\"\n", wasm.display()))
        .unwrap();
    let stderr = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pitstop"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env_remove("PITSTOP_JWT_SECRET")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("starting pitstop to compile an example");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let mut log = String::new();
    let up = lines.by_ref().any(|line| {
        log.push_str(&line);
        log.push('\n');
        line.starts_with("pitstop admin on ")
    });
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    log.extend(lines.map(|line| line + "\n"));
    let exited = child.wait().unwrap();
    if !(up && exited.success()) {
        return Err(format!(
            "pitstop serve could not deploy examples/{name} ({exited}); its log:\n{log}{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        ));
    }
    eprintln!("examples: compiled {name} in {:.1?}", started.elapsed());
    Ok(Built { wasm, cache: dir.join("data").join("cache") })
}

/// A `pitstop serve` with the default config on a new data dir whose
/// artifact cache holds `examples` compiled (linked, not copied: pitstop
/// replaces entries by renaming, never writes into one).
async fn serve(examples: &[&str]) -> (Server, Arc<TempDir>) {
    serve_with(examples, None).await
}

/// [`serve`] with a config file.
async fn serve_with(examples: &[&str], config: Option<&str>) -> (Server, Arc<TempDir>) {
    let data = cold_dir();
    let cache = data.path().join("data").join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    for name in examples {
        for entry in std::fs::read_dir(&example(name).cache).unwrap() {
            let entry = entry.unwrap();
            let to = cache.join(entry.file_name());
            if !to.exists() && std::fs::hard_link(entry.path(), &to).is_err() {
                std::fs::copy(entry.path(), &to).unwrap();
            }
        }
    }
    (Server::start_with(config, data.clone()).await, data)
}

/// `PUT /admin/components/NAME?route=PREFIX` with the example's bytes: a
/// new component, version 1.
async fn deploy(server: &Server, name: &str, prefix: &str) {
    let bytes = std::fs::read(&example(name).wasm).unwrap();
    let path = format!("/admin/components/{name}?route={prefix}");
    let deployed = server.admin("PUT", &path, bytes).await;
    assert_eq!(deployed.status, 201, "deploying {name}: {}", text(&deployed));
    assert_eq!(deployed.json()["version"], 1);
}

fn text(answer: &Answer) -> String {
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// `(status, body)`, for comparing at once.
fn seen(answer: &Answer) -> (u16, String) {
    (answer.status, text(answer))
}

/// What the READMEs of python-hello and js-hello promise, on `PREFIX`.
async fn says_hello_and_counts(name: &str, prefix: &str, hello: &str) {
    let (server, _data) = serve(&[name]).await;
    deploy(&server, name, prefix).await;
    keeps_its_promises(&server, name, prefix, hello).await;
}

/// The README's answers, from a running `name` on `prefix`.
async fn keeps_its_promises(server: &Server, name: &str, prefix: &str, hello: &str) {
    let answer = server.get(&format!("{prefix}/hello")).await;
    assert_eq!(seen(&answer), (200, hello.to_string()));
    assert_eq!(answer.header("pitstop-component"), Some(name));
    assert_eq!(answer.header("content-type"), Some("text/plain; charset=utf-8"));

    let count = format!("{prefix}/count");
    assert_eq!(seen(&server.get(&count).await), (200, "0\n".into()), "nothing counted yet");
    // Writes need a token by default: without one the guest is not called.
    let refused = server.send_raw("POST", &count, &[], "").await;
    assert_eq!(refused.status, 401, "{}", text(&refused));
    assert_eq!(seen(&server.send("POST", &count, "").await), (200, "1\n".into()));
    assert_eq!(seen(&server.send("POST", &count, "").await), (200, "2\n".into()));
    assert_eq!(seen(&server.get(&count).await), (200, "2\n".into()), "the count is kept");

    assert_eq!(server.get(&format!("{prefix}/nope")).await.status, 404);
    assert_eq!(server.send("DELETE", &count, "").await.status, 405);
}

/// The Python service (componentize-py) deploys on `/py`: `GET /py/hello`
/// is `hello from python`; `POST /py/count` (with a token; 401 without)
/// answers 1, then 2, and `GET /py/count` reads 2 afterwards.
#[tokio::test]
async fn python_hello_says_hello_and_counts() {
    says_hello_and_counts("python-hello", "/py", "hello from python").await;
}

/// The Python service with `reuse` keeps the same promises, served by one
/// warm instance: the interpreter starts once, not once per request.
#[tokio::test]
async fn python_hello_serves_from_a_warm_instance() {
    let config = "[components.python-hello]\nreuse = { max_requests = 1000 }\nmax_parallel = 1\n";
    let (server, _data) = serve_with(&["python-hello"], Some(config)).await;
    // The config's file has no route table: the built-in one plus `/py`.
    deploy(&server, "python-hello", "/py").await;
    keeps_its_promises(&server, "python-hello", "/py", "hello from python").await;
    for _ in 0..20 {
        assert_eq!(seen(&server.get("/py/hello").await), (200, "hello from python".into()));
    }
    let made = r#"pitstop_instantiation_duration_seconds_count{component="python-hello"}"#;
    // The 404 and 405 answers keep the instance; no answer was a 5xx.
    assert_eq!(server.metric(made).await, 1.0, "one instance for 30 requests");
}

/// The JavaScript service (componentize-js) deploys on `/js`: `GET
/// /js/hello` is `hello from js`; `POST /js/count` (with a token; 401
/// without) answers 1, then 2, and `GET /js/count` reads 2 afterwards.
#[tokio::test]
async fn js_hello_says_hello_and_counts() {
    says_hello_and_counts("js-hello", "/js", "hello from js").await;
}

/// The standard wasi:http/proxy component (JavaScript) deploys unchanged:
/// any path under its prefix, nested or not, and any method is 200 `hello
/// from wasi:http`, marked `pitstop-component: http-hello`, and the guest
/// saw the full path.
#[tokio::test]
async fn http_hello_answers_any_path_under_its_prefix() {
    let (server, _data) = serve(&["http-hello"]).await;
    deploy(&server, "http-hello", "/hello-http").await;
    for (method, path) in
        [("GET", "/hello-http"), ("GET", "/hello-http/any/path"), ("POST", "/hello-http/a/b?c=d")]
    {
        let answer = server.send(method, path, "").await;
        assert_eq!(seen(&answer), (200, "hello from wasi:http".into()), "{method} {path}");
        assert_eq!(answer.header("pitstop-component"), Some("http-hello"), "{method} {path}");
        let path = path.split('?').next().unwrap();
        assert_eq!(answer.header("x-path"), Some(path), "the path the guest saw");
    }
    assert_eq!(server.get("/hello-http-not").await.status, 404, "a prefix is a path segment");
}

/// The Python and the JavaScript service each count in their own keyspace
/// (both use the key `count`): counting in one leaves the other's count
/// alone, and both counts survive a restart of the server.
#[tokio::test]
async fn python_and_js_count_in_separate_keyspaces() {
    let (server, data) = serve(&["python-hello", "js-hello"]).await;
    deploy(&server, "python-hello", "/py").await;
    deploy(&server, "js-hello", "/js").await;
    for expected in ["1\n", "2\n", "3\n"] {
        assert_eq!(seen(&server.send("POST", "/py/count", "").await), (200, expected.into()));
    }
    assert_eq!(seen(&server.send("POST", "/js/count", "").await), (200, "1\n".into()));
    assert_eq!(seen(&server.get("/py/count").await), (200, "3\n".into()));
    assert_eq!(seen(&server.get("/js/count").await), (200, "1\n".into()));

    assert!(server.stop_with("TERM").await.success());
    let server = Server::start_with(None, data).await;
    assert_eq!(seen(&server.get("/py/count").await), (200, "3\n".into()), "after a restart");
    assert_eq!(seen(&server.get("/js/count").await), (200, "1\n".into()), "after a restart");
}
