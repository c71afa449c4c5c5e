//! `pitstop dev`: a project built by commands of its own
//! (`pitstop-dev.toml`), the loop's output and its errors. The Rust crate's
//! loop is driven in `scaffold.rs`.

use std::path::Path;
use std::time::Duration;

use crate::support::{OUTER_BUILD_VARS, test_components};

/// A project that is no crate: `pitstop dev --serve` runs its build and
/// test commands, deploys what the build made at `/NAME`, and cycles again
/// when a source (here the config itself) changes; a failing test deploys
/// nothing; a change to the project's config is built with the new config.
#[test]
fn a_project_with_its_own_build_command_is_built_tested_and_deployed() {
    let dir = tempfile::tempdir().unwrap();
    let components = test_components();
    let config = |wasm: &str, test: &str| {
        format!(
            "name = \"greeter\"\nbuild = \"mkdir -p out && cp {} out/greeter.wasm\"\n\
             wasm = \"out/greeter.wasm\"\ntest = \"{test}\"\n",
            components.join(wasm).display()
        )
    };
    std::fs::write(dir.path().join("pitstop-dev.toml"), config("hello.wasm", "echo ok")).unwrap();
    let path = crate::scaffold::path_with_pitstop();
    let mut watching = DevLoop::start(dir.path(), &path);
    let serving = watching.line_with("dev: serving on http://");
    let addr = serving["dev: serving on http://".len()..].split(',').next().unwrap().to_string();
    let first = watching.line_with("dev: buil");
    assert!(first.contains(", tests passed in "), "{first}");
    assert!(first.contains("deployed greeter version 1 at /greeter in"), "{first}");
    assert_eq!(get_text(&addr, "/greeter").0, 200);

    let failing = config("http_hello.wasm", "echo no such thing; exit 3");
    std::fs::write(dir.path().join("pitstop-dev.toml"), failing).unwrap();
    let refused = watching.line_with("dev: buil");
    assert!(refused.contains("tests failed after"), "{refused}");
    assert!(refused.ends_with("nothing deployed"), "{refused}");
    std::fs::write(dir.path().join("pitstop-dev.toml"), config("http_hello.wasm", "true")).unwrap();
    let second = watching.line_with("dev: buil");
    assert!(second.contains("deployed greeter version 2 in"), "{second}");
    assert_eq!(get_text(&addr, "/greeter").0, 200);
}

/// A directory that is neither a crate nor has a `pitstop-dev.toml`, and a
/// config missing its build command, are refused with what is missing.
#[test]
fn pitstop_dev_says_what_it_cannot_build() {
    let dir = tempfile::tempdir().unwrap();
    let dev = |dir: &Path| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
            .args(["dev", "--once", "--admin-url", "http://127.0.0.1:1", "--admin-token", "x"])
            .arg(dir)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8(output.stderr).unwrap()
    };
    let nothing = dev(dir.path());
    assert!(nothing.contains("is neither a crate nor has a pitstop-dev.toml"), "{nothing}");
    std::fs::write(dir.path().join("pitstop-dev.toml"), "name = \"x\"\nwasm = \"x.wasm\"\n")
        .unwrap();
    let incomplete = dev(dir.path());
    assert!(incomplete.contains("missing field `build`"), "{incomplete}");
}

/// A `pitstop dev --serve` running in the background, its output read line
/// by line as it comes.
pub struct DevLoop {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    errors: std::sync::Arc<std::sync::Mutex<String>>,
}

impl DevLoop {
    pub fn start(dir: &Path, path: &std::ffi::OsStr) -> DevLoop {
        use std::io::{BufRead, Read};
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"));
        for var in OUTER_BUILD_VARS {
            command.env_remove(var);
        }
        let mut child = command
            .args(["dev", "--serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env("PATH", path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let kept = errors.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                kept.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        DevLoop { child, lines, seen: Vec::new(), errors }
    }

    /// The next line containing `wanted` (a build may take minutes on a
    /// loaded machine).
    pub fn line_with(&mut self, wanted: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(wanted) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "pitstop dev never printed {wanted:?}; it printed:\n{}\n{}",
                    self.seen.join("\n"),
                    self.errors.lock().unwrap()
                ),
            }
        }
    }
}

impl Drop for DevLoop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` from the server at `addr`: the status and the body.
pub fn get_text(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}
