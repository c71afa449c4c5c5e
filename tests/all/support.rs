//! Shared test plumbing: building the test components, starting the real
//! `pitstop` binary on an ephemeral port, and talking HTTP to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tempfile::TempDir;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

include!("../../host/guest_cargo.rs");

/// `cargo ARGS --manifest-path MANIFEST --target-dir TARGET_DIR` for a guest workspace.
pub fn guest_cargo_in(args: &[&str], manifest: &Path, target_dir: &Path) -> Command {
    let mut command = guest_cargo();
    command.args(args).arg("--manifest-path").arg(manifest).arg("--target-dir").arg(target_dir);
    command
}

/// The directory holding the test components (`trap.wasm`, `kvprobe.wasm`),
/// built once per test run.
pub fn test_components() -> &'static Path {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built(DIR.get_or_init(|| build_release("tests/components", "wasm-components", &[])))
}

/// A build's output, or the panic every test that needs it ends with: the
/// first failure's own message, cargo's errors included, not a rebuild
/// per test or an unrelated assertion.
fn built(build: &Result<PathBuf, String>) -> &Path {
    match build {
        Ok(path) => path,
        Err(failure) => panic!("{failure}"),
    }
}

/// An address that refuses connections for the whole test run: a port
/// bound and never listened on, so no other process can take it (port 9
/// was only assumed to be closed).
pub fn refusing_address() -> &'static str {
    static HELD: OnceLock<(tokio::net::TcpSocket, String)> = OnceLock::new();
    &HELD
        .get_or_init(|| {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = socket.local_addr().unwrap().to_string();
            (socket, addr)
        })
        .1
}

/// A loopback port for a server a test starts that must know its port
/// before it listens, or listen again on it after a restart (nats-server).
/// Taken below the kernel's ephemeral range, which the
/// kernel hands to `bind(0)` and to outgoing connections: between the
/// check here and the server's own bind, or while the server is down,
/// only a process binding that very port could take it. Never the same
/// port twice in one run.
pub fn unused_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
    let low: u16 =
        range.ok().and_then(|r| r.split_whitespace().next()?.parse().ok()).unwrap_or(32768);
    let mut given = GIVEN.lock().unwrap();
    let start = 10_000 + (std::process::id() % 1000) as u16 * 16;
    let port = (start..low.saturating_sub(1))
        .chain(10_000..start)
        .filter(|port| !given.contains(port))
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free loopback port below the ephemeral range");
    given.push(port);
    port
}

/// A `pitstop.toml` deploying the test component `wasm` (e.g. "kvprobe") as
/// `name` with the `settings` lines (limits, may be empty), routed at `prefix`.
pub fn single_component_config(name: &str, wasm: &str, settings: &str, prefix: &str) -> String {
    let path = test_components().join(format!("{wasm}.wasm"));
    format!(
        "[components.{name}]\npath = \"{}\"\n{settings}\n[[routes]]\nprefix = \"{prefix}\"\ncomponent = \"{name}\"\n",
        path.display()
    )
}

/// `cargo build --release --target wasm32-wasip2 EXTRA` of the guest
/// workspace `workspace` into `target/TARGET_DIR`; returns the directory
/// holding the `.wasm` files.
fn build_release(workspace: &str, target_dir: &str, extra: &[&str]) -> Result<PathBuf, String> {
    let root = repo_root();
    let target = root.join("target").join(target_dir);
    let output = guest_cargo_in(
        &["build", "--release", "--target", "wasm32-wasip2"],
        &root.join(workspace).join("Cargo.toml"),
        &target,
    )
    .args(extra)
    .output()
    .map_err(|e| format!("running cargo to build {workspace}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The errors are at the end of cargo's output.
        let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "building {workspace} {extra:?} failed (every test that needs it fails with this):\n{}",
            tail.join("\n")
        ));
    }
    Ok(target.join("wasm32-wasip2").join("release"))
}

/// A running `pitstop serve` process.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The admin API, `http://127.0.0.1:PORT`.
    pub admin_base: String,
    /// The data dir; kept alive as long as the server (and across restarts).
    _data: std::sync::Arc<TempDir>,
    log: PathBuf,
    client: Client<HttpConnector, Full<Bytes>>,
    /// A token for subject `tester`, minted with `pitstop token` from the
    /// server's secret, sent with every request that brings no credentials
    /// of its own; `None` when the config has no HS256 secret to mint from.
    pub token: Option<String>,
}

/// What a response looked like.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON; panics with the body text when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    /// The `error` message of a JSON error body.
    pub fn error(&self) -> String {
        let json = self.json();
        json["error"].as_str().unwrap_or_else(|| panic!("no error message in {json}")).to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Server {
    /// Start with the built-in defaults and a fresh data dir.
    pub async fn start() -> Server {
        Self::start_with(None, fresh_dir()).await
    }

    /// Start with `config` (TOML text, written to the data dir's parent) on `data`.
    pub async fn start_with(config: Option<&str>, data: std::sync::Arc<TempDir>) -> Server {
        Self::start_with_args(config, data, &[]).await
    }

    /// Start with `config` on `data`, passing `extra` arguments to `pitstop serve`.
    pub async fn start_with_args(
        config: Option<&str>,
        data: std::sync::Arc<TempDir>,
        extra: &[&std::ffi::OsStr],
    ) -> Server {
        Self::start_with_env(config, data, extra, &[]).await
    }

    /// [`Server::start_with_args`] with extra environment variables.
    pub async fn start_with_env(
        config: Option<&str>,
        data: std::sync::Arc<TempDir>,
        extra: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
    ) -> Server {
        let log = data.path().join(format!("pitstop-{}.log", rand_suffix()));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pitstop"));
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data.path().join("data"))
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("PITSTOP_JWT_SECRET")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file.try_clone().unwrap());
        let config_path = config.map(|config| {
            let path = data.path().join(format!("pitstop-{}.toml", rand_suffix()));
            std::fs::write(&path, config).unwrap();
            path
        });
        if let Some(path) = &config_path {
            command.arg("--config").arg(path);
        }
        let mut child = command.spawn().expect("starting pitstop");
        // The log is on stdout: copy it to the log file for the whole run
        // (a full pipe would block the server), picking out the addresses.
        let stdout = child.stdout.take().unwrap();
        let (addresses, found) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut log_file = log_file;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log_file, "{line}");
                for prefix in ["pitstop listening on ", "pitstop admin on "] {
                    if let Some(address) = line.strip_prefix(prefix) {
                        let _ = addresses.send(address.trim().to_string());
                    }
                }
            }
        });
        let log_for_error = log.clone();
        let (base, admin) = tokio::task::spawn_blocking(move || {
            let next = || {
                found.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
                    panic!(
                        "pitstop did not start; its log:\n{}",
                        std::fs::read_to_string(&log_for_error).unwrap_or_default()
                    )
                })
            };
            (next(), next())
        })
        .await
        .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        let mut server =
            Server { child, base, admin_base: admin, _data: data, log, client, token: None };
        server.token = server.mint_token("tester", "1h", config_path.as_deref(), env);
        server
    }

    /// `pitstop token --sub SUBJECT --ttl TTL` for this server, if it can mint.
    pub fn mint_token(
        &self,
        subject: &str,
        ttl: &str,
        config: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Option<String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pitstop"));
        command
            .args(["token", "--sub", subject, "--ttl", ttl, "--data-dir"])
            .arg(self.data_dir())
            .env_remove("PITSTOP_JWT_SECRET")
            .envs(env.iter().copied());
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let output = command.output().unwrap();
        output
            .status
            .success()
            .then(|| String::from_utf8(output.stdout).unwrap().trim().to_string())
    }

    /// A one-hour token for `subject` holding `roles`, minted with
    /// `pitstop token --role` from this server's data dir.
    pub fn token_for(&self, subject: &str, roles: &[&str]) -> String {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pitstop"));
        command.args(["token", "--sub", subject, "--data-dir"]).arg(self.data_dir());
        for role in roles {
            command.args(["--role", role]);
        }
        let output = command.env_remove("PITSTOP_JWT_SECRET").output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// `method path` with `token` as the bearer (none: anonymous).
    pub async fn send_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Answer {
        match token {
            Some(token) => {
                let bearer = format!("Bearer {token}");
                self.send_raw(method, path, &[("authorization", &bearer)], body).await
            }
            None => self.send_raw(method, path, &[], body).await,
        }
    }

    /// Send a request to the gateway with the server's token; `body` is sent as is.
    pub async fn send(&self, method: &str, path: &str, body: impl Into<Bytes>) -> Answer {
        self.send_with(method, path, &[], body).await
    }

    /// Send a request with extra headers to the gateway; the server's token
    /// goes along unless `headers` bring credentials of their own.
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let own = headers.iter().any(|(name, _)| {
            name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("x-api-key")
        });
        let bearer = self.token.as_ref().filter(|_| !own).map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(bearer) = &bearer {
            all.push(("authorization", bearer));
        }
        self.send_raw(method, path, &all, body).await
    }

    /// Send a request with exactly `headers` (and a JSON content type).
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.exchange(request.body(Full::new(body.into())).unwrap()).await
    }

    /// Call the admin API with the server's token.
    pub async fn admin(&self, method: &str, path: &str, body: impl Into<Bytes>) -> Answer {
        let token = std::fs::read_to_string(self.data_dir().join("admin.token")).unwrap();
        self.admin_with(method, path, body, Some(&format!("Bearer {token}"))).await
    }

    /// Call the admin API with the given `Authorization` header, or none.
    pub async fn admin_with(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
        authorization: Option<&str>,
    ) -> Answer {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.admin_base, path))
            .header("content-type", "application/wasm");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        self.exchange(request.body(Full::new(body.into())).unwrap()).await
    }

    /// `GET /metrics` on the admin listener, without a token, parsed.
    pub async fn metrics(&self) -> Vec<(String, f64)> {
        let answer = self.admin_with("GET", "/metrics", "", None).await;
        assert_eq!(answer.status, 200, "no token needed");
        assert!(answer.header("content-type").unwrap().contains("openmetrics-text"));
        parse_metrics(std::str::from_utf8(&answer.body).unwrap())
    }

    /// The value of one series (`name{labels}`) of `GET /metrics`, 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        sample(&self.metrics().await, series)
    }

    /// Run a `pitstop` admin subcommand against this server.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_pitstop"))
            .args(args)
            .args(["--admin-url", &self.admin_base, "--data-dir"])
            .arg(self.data_dir())
            .env_remove("PITSTOP_ADMIN_TOKEN")
            .output()
            .unwrap()
    }

    /// The server's process id.
    /// Wait (up to 10 s) until `component` has `n` invocations in flight,
    /// by `pitstop_in_flight_invocations`: a request is known to be running
    /// without sleeping for it.
    pub async fn wait_in_flight(&self, component: &str, n: f64) {
        let series = format!(r#"pitstop_in_flight_invocations{{component="{component}"}}"#);
        eventually(
            &format!("{n} invocations of {component} in flight"),
            Duration::from_secs(10),
            || async { (self.metric(&series).await == n).then_some(()) },
        )
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> PathBuf {
        self._data.path().join("data")
    }

    async fn exchange(&self, request: http::Request<Full<Bytes>>) -> Answer {
        self.try_exchange(request).await.expect("request failed")
    }

    /// The answer, or `None` when the connection broke first (the server
    /// died while answering); panics if nothing happens within 30 s.
    async fn try_exchange(&self, request: http::Request<Full<Bytes>>) -> Option<Answer> {
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("no answer within 30 s")
            .ok()?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some(Answer { status: parts.status.as_u16(), headers: parts.headers, body })
    }

    /// [`Server::send`] to a server that may die before it answers (a fail
    /// point that kills it): `None` when the connection broke.
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Option<Answer> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        self.try_exchange(request.body(Full::new(body.into())).unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, Bytes::new()).await
    }

    pub async fn post(&self, path: &str, json: Value) -> Answer {
        self.send("POST", path, serde_json::to_vec(&json).unwrap()).await
    }

    /// Register a user and return its id.
    pub async fn create_user(&self, name: &str, email: &str) -> String {
        let answer = self.post("/users", serde_json::json!({"name": name, "email": email})).await;
        assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
        answer.json()["id"].as_str().unwrap().to_string()
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log, holding every line the server wrote before this call. A
    /// line passes through the server's log thread and this harness's copy
    /// of its output, so [`Server::log`] may lack one written moments ago:
    /// a check that a line is absent reads this. A marker goes through the
    /// same way (an admin `POST` to no route, logged at INFO), and the log
    /// is read once it is there.
    pub async fn log_now(&self) -> String {
        static MARKERS: AtomicUsize = AtomicUsize::new(0);
        let marker = format!("/admin/log-marker/{}", MARKERS.fetch_add(1, Ordering::SeqCst));
        assert_eq!(self.admin("POST", &marker, "").await.status, 404);
        eventually("the log's marker", Duration::from_secs(10), || async {
            let log = self.log();
            log.contains(&marker).then_some(log)
        })
        .await
    }

    /// Send `signal` (e.g. "TERM", "INT") and wait for the exit.
    pub async fn stop_with(mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(sent.success());
        self.wait_for_exit(Duration::from_secs(20)).await
    }

    /// Wait up to `limit` for the process to exit (after a signal sent
    /// some other way); panics if it does not.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "pitstop did not exit within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The samples of a Prometheus text exposition, `name{labels}` -> value,
/// checking every line is well-formed and the text ends with `# EOF`.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    let mut saw_eof = false;
    for line in text.lines() {
        assert!(!saw_eof, "nothing may follow # EOF");
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "unknown comment: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.push((series.to_string(), value));
    }
    assert!(saw_eof, "the exposition ends with # EOF");
    samples
}

/// The value of `series` among `samples`, 0 when absent.
pub fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples.iter().find(|(s, _)| s == series).map_or(0.0, |(_, v)| *v)
}

/// A body as text (lossy where it is not UTF-8).
pub fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// Run `pitstop serve` with `config`, expecting it to refuse to start; its stderr.
pub fn serve_refuses(config: &str) -> String {
    let data = fresh_dir();
    let path = data.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pitstop"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .env_remove("PITSTOP_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success(), "pitstop started with {config:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A new temporary directory for a server's data (and config), its artifact
/// cache holding the built-ins and the test components compiled already
/// (see [`warm_cache`]): a test's server starts in milliseconds instead of
/// compiling for a second, and timing-sensitive tests are not measured
/// beside other servers' compiles.
pub fn fresh_dir() -> std::sync::Arc<TempDir> {
    let dir = cold_dir();
    warm_up(&dir.path().join("data"));
    dir
}

/// Fill the artifact cache of the data dir `data` (see [`fresh_dir`]).
pub fn warm_up(data: &Path) {
    let cache = data.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    // Copied, not linked: a test that corrupts an entry in place must not
    // corrupt every other test's.
    for entry in std::fs::read_dir(warm_cache()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), cache.join(entry.file_name())).unwrap();
    }
}

/// A new temporary directory for a server's data with nothing in it: for
/// the tests of the artifact cache itself.
pub fn cold_dir() -> std::sync::Arc<TempDir> {
    std::sync::Arc::new(TempDir::new().unwrap())
}

/// An artifact cache filled once per test run by a server of its own that
/// deploys the built-ins and every test component that can serve. Entries
/// are keyed by the bytes' digest and the engine's fingerprint, so any
/// server of this binary loads them whatever name the component gets.
fn warm_cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = TempDir::new().unwrap().keep();
        let mut config = String::new();
        for wasm in ["kvprobe", "trap", "busprobe", "busy", "hello"] {
            let path = test_components().join(format!("{wasm}.wasm"));
            config.push_str(&format!("[components.warm-{wasm}]\npath = \"{}\"\n", path.display()));
        }
        let path = faulty_payment();
        config.push_str(&format!("[components.warm-faulty]\npath = \"{}\"\n", path.display()));
        let config_path = dir.join("warm.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pitstop"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting pitstop to warm the artifact cache");
        // Every component is compiled and cached before the addresses are printed.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started =
            lines.by_ref().map_while(Result::ok).any(|line| line.starts_with("pitstop admin on "));
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        lines.for_each(drop);
        let exited = child.wait().unwrap();
        assert!(started && exited.success(), "warming the artifact cache failed: {exited}");
        dir.join("data").join("cache")
    })
}

/// The payment service built with its `faults` feature (see its crate
/// docs), built once per test run apart from the shipped one.
pub fn faulty_payment() -> &'static Path {
    static WASM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built(WASM.get_or_init(|| {
        let extra = ["-p", "payment", "--features", "faults"];
        Ok(build_release("components", "wasm-components-faults", &extra)?.join("payment.wasm"))
    }))
}

/// Poll `probe` every 50 ms until it returns `Some`, for at most `limit`;
/// panics naming `what` when time runs out.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The resident memory of process `pid`, in KiB (from /proc).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `GET path` on the gateway at `base` with a 2-byte body sent `after` the
/// head, on a connection of its own (a client uploading slowly); the
/// answer's status line.
pub async fn slow_upload(base: &str, path: &str, after: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nhost: pitstop\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(after).await;
    stream.write_all(b"{}").await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

/// How many file descriptors process `pid` has open (for the load tests).
#[allow(dead_code)]
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|fds| fds.count()).unwrap_or(0)
}

/// A host on loopback that accepts connections and never answers; its
/// address, with counts of the connections open now and of those ever
/// accepted.
pub async fn silent_host() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (open, accepted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counts = (open.clone(), accepted.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            let (open, accepted) = (counts.0.clone(), counts.1.clone());
            open.fetch_add(1, Ordering::SeqCst);
            accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Read until the other side hangs up; never answer.
                let mut buffer = [0u8; 1024];
                while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (address, open, accepted)
}

/// An HTTP/1.1 server on loopback that answers each request with `answer`,
/// given the request head and its whole body; returns `http://ADDRESS`.
/// For the servers the platform talks to (an upstream, a collector).
pub async fn loopback_server<F, Fut>(answer: F) -> String
where
    F: Fn(http::request::Parts, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    let answer = answer.clone();
                    async move {
                        let (parts, body): (_, hyper::body::Incoming) = request.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(answer(parts, body).await)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    address
}

/// A 200 a looping client got: the version that answered, when the
/// request was sent and when its answer came.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    pub version: u64,
    pub sent: Instant,
    pub answered: Instant,
}

/// One looping client's 200s, and every other answer it got (status, body).
pub type ClientOutcome = (Vec<Served>, Vec<(u16, String)>);

/// A change of a component's active version made while clients loop.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    pub replaced: u64,
    pub by: u64,
    /// When the admin request was sent.
    pub began: Instant,
}

/// Clients sending `GET path` in a loop, one request after the other each,
/// until [`Looping::stop`].
pub struct Looping {
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Every client's 200s so far, by client and the version that answered.
    served: std::sync::Arc<Mutex<std::collections::HashMap<(usize, u64), usize>>>,
    clients: Vec<tokio::task::JoinHandle<ClientOutcome>>,
}

impl Looping {
    /// `clients` of them against `server`, client `i` on `paths[i % len]`.
    pub fn start(server: &std::sync::Arc<Server>, paths: &[&str], clients: usize) -> Looping {
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let served = std::sync::Arc::new(Mutex::new(std::collections::HashMap::new()));
        let clients = (0..clients)
            .map(|i| {
                let (server, running) = (server.clone(), running.clone());
                let (path, counts) = (paths[i % paths.len()].to_string(), served.clone());
                tokio::spawn(async move {
                    let (mut served, mut failed) = (Vec::new(), Vec::new());
                    while running.load(std::sync::atomic::Ordering::Relaxed) {
                        let sent = Instant::now();
                        let answer = server.get(&path).await;
                        match answer.status {
                            200 => {
                                let version = answer.header("pitstop-version").unwrap_or_default();
                                let version = version.parse().unwrap_or(0);
                                served.push(Served { version, sent, answered: Instant::now() });
                                *counts.lock().unwrap().entry((i, version)).or_default() += 1;
                            }
                            status => failed.push((status, text(&answer.body))),
                        }
                    }
                    (served, failed)
                })
            })
            .collect();
        Looping { running, served, clients }
    }

    /// Each client's 200s so far from `version`.
    fn served_by(&self, version: u64) -> Vec<usize> {
        let served = self.served.lock().unwrap();
        (0..self.clients.len()).map(|i| served.get(&(i, version)).copied().unwrap_or(0)).collect()
    }

    /// Wait until each client has had an answer from `version` after now:
    /// then each is sending requests that `version` takes.
    pub async fn wait_each_served_by(&self, version: u64) {
        let before = self.served_by(version);
        eventually(&format!("each client served by {version}"), Duration::from_secs(20), || {
            let done = self.served_by(version).iter().zip(&before).all(|(now, then)| now > then);
            async move { done.then_some(()) }
        })
        .await;
    }

    /// Swap `component` (whose active version is `version`, with `wasm`'s
    /// bytes) to a rebuild of it and roll it back, `rounds` times, while
    /// these clients run. Each change waits until every client has had an
    /// answer from the version it replaces, so each has a request of that
    /// version in flight (or is about to send one) when it is made.
    pub async fn swap_and_roll_back(
        &self,
        server: &Server,
        component: &str,
        version: u64,
        wasm: &[u8],
        rounds: u8,
    ) -> Vec<Change> {
        let (mut changes, mut version) = (Vec::new(), version);
        for round in 1..=rounds {
            self.wait_each_served_by(version).await;
            let path = format!("/admin/components/{component}");
            let began = Instant::now();
            let swapped = server.admin("PUT", &path, rebuilt(wasm, round)).await;
            assert_eq!(swapped.status, 200, "{}", text(&swapped.body));
            let new = swapped.json()["version"].as_u64().unwrap();
            changes.push(Change { replaced: version, by: new, began });
            self.wait_each_served_by(new).await;
            let began = Instant::now();
            let back = server.admin("POST", &format!("{path}/rollback"), "").await;
            assert_eq!(back.status, 200, "{}", text(&back.body));
            // The version numbered before the active one: the one it
            // replaced, except after the first round.
            let back = back.json()["version"].as_u64().unwrap();
            changes.push(Change { replaced: new, by: back, began });
            version = back;
        }
        self.wait_each_served_by(version).await;
        changes
    }

    /// Stop them; what each client got.
    pub async fn stop(self) -> Vec<ClientOutcome> {
        self.running.store(false, std::sync::atomic::Ordering::Relaxed);
        let mut outcomes = Vec::new();
        for client in self.clients {
            outcomes.push(client.await.unwrap());
        }
        outcomes
    }
}

/// Every client was served and none failed, and each change had a request
/// in flight across it: one answered by the version it replaced after an
/// answer of the version that replaced it to a request sent after the
/// change began. That second request was routed after the switch, so the
/// first, routed before it, was still running then.
pub fn assert_no_failure_across(outcomes: &[ClientOutcome], changes: &[Change]) {
    for (served, failed) in outcomes {
        assert!(failed.is_empty(), "failed requests during the changes: {failed:?}");
        assert!(!served.is_empty(), "a client was never served");
    }
    let all: Vec<Served> = outcomes.iter().flat_map(|(served, _)| served.iter().copied()).collect();
    for change in changes {
        let first_new = all
            .iter()
            .filter(|s| s.version == change.by && s.sent > change.began)
            .map(|s| s.answered)
            .min()
            .unwrap_or_else(|| panic!("no answer of version {} after {change:?}", change.by));
        let across = all.iter().filter(|s| s.version == change.replaced && s.answered > first_new);
        if across.count() == 0 {
            let since = |at: Instant| at.saturating_duration_since(change.began);
            let replaced: Vec<_> = (all.iter())
                .filter(|s| s.version == change.replaced)
                .map(|s| (since(s.sent), since(s.answered)))
                .filter(|(_, answered)| !answered.is_zero())
                .collect();
            panic!(
                "no request was in flight across {change:?}: the first answer of {} came {:?} \
                 after it began; those of {} (sent, answered) after it began: {replaced:?}",
                change.by,
                since(first_new),
                change.replaced
            );
        }
    }
}

/// `wasm` with a custom section naming `n` appended: the same component,
/// other bytes (a rebuild that changed nothing). Deploying the active
/// version's bytes again deploys nothing, so tests that swap use these.
pub fn rebuilt(wasm: &[u8], n: u8) -> Vec<u8> {
    let name = b"pitstop-test";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.push(n);
    let mut out = wasm.to_vec();
    out.push(0); // a custom section
    out.push(section.len() as u8); // its size, one LEB128 byte
    out.extend_from_slice(&section);
    out
}
