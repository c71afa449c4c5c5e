//! What the benchmarks that build test components or run the real binary
//! share: the build, starting `pitstop serve`, and a user to read.
//!
//! A folder with `mod.rs`, so cargo does not take it for a benchmark.

// Each benchmark uses its own part.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

include!("../../guest_cargo.rs");

/// An HTTP client for the gateway and the admin API.
pub type Http = Client<HttpConnector, Full<Bytes>>;

/// The `tests/components` member `package`, built for release (into the
/// same target dir as the integration tests'); the path of its `.wasm`.
pub fn build_test_component(package: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let target = root.join("target").join("wasm-components");
    let status = guest_cargo()
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "-p", package])
        .arg("--manifest-path")
        .arg(root.join("tests/components/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("running cargo for tests/components");
    assert!(status.success(), "building tests/components/{package} failed");
    target.join(format!("wasm32-wasip2/release/{}.wasm", package.replace('-', "_")))
}

/// A running `pitstop serve`, killed when dropped.
pub struct Pitstop {
    child: Child,
    /// `http://127.0.0.1:PORT` of the gateway.
    pub base: String,
    /// `http://127.0.0.1:PORT` of the admin API.
    pub admin: String,
}

impl Pitstop {
    /// Start `binary serve` on loopback ports with its data in `data_dir`
    /// and `extra` arguments, logging at warn.
    pub fn start(binary: &Path, data_dir: &Path, extra: &[&OsStr]) -> Self {
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut lines = std::io::BufRead::lines(stdout);
        let base = lines.next().unwrap().unwrap().replace("pitstop listening on ", "");
        let admin = lines.next().unwrap().unwrap().replace("pitstop admin on ", "");
        // The log goes on on stdout: keep draining it so the server never blocks.
        std::thread::spawn(move || lines.for_each(drop));
        Pitstop { child, base, admin }
    }
}

impl Drop for Pitstop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user token minted by `pitstop token` from the secret in `data_dir`.
pub fn mint_token(data_dir: &Path) -> String {
    let minted = Command::new(env!("CARGO_BIN_EXE_pitstop"))
        .args(["token", "--sub", "bench", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    String::from_utf8(minted.stdout).unwrap().trim().to_string()
}

/// Register a user through the gateway at `base` with `token`; its id.
pub async fn create_user(http: &Http, base: &str, token: &str) -> String {
    let body = r#"{"name":"Bench","email":"bench@example.com"}"#;
    let request = http::Request::post(format!("{base}/users"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = http.request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    json["id"].as_str().unwrap().to_string()
}
