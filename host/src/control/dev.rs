//! `pitstop dev [DIR]`: the inner loop of writing a service. Build the crate
//! in DIR for `wasm32-wasip2`, run its wasm tests, deploy it to the server
//! (a name new to the server at `/NAME`), and again whenever its sources
//! change, printing one line per cycle with the time each step took. A
//! failed build or test deploys nothing; the version serving stays. The
//! server is a running one, or (`--serve`, set up by `main.rs`) one in the
//! same process.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;

use crate::control::client::{AdminClient, encode};

/// How often the sources are looked at.
const POLL: Duration = Duration::from_millis(300);

/// Cycles of build, test and deploy of the crate in `dir`, through
/// `client`; only one with `once`. The exit status: 0 when the last cycle
/// deployed (or found nothing to deploy).
pub async fn run(dir: &Path, client: &AdminClient, once: bool) -> anyhow::Result<i32> {
    let name = package_name(dir)?;
    client.call("GET", "/admin/components", Bytes::new()).await.context(
        "is a server running? Start one with `pitstop serve`, or run `pitstop dev --serve` for \
         a server of its own",
    )?;
    let mut seen = stamp(dir);
    loop {
        let ok = cycle(dir, &name, client).await?;
        if once {
            return Ok(if ok { 0 } else { 1 });
        }
        println!("dev: watching {} for changes (Ctrl-C stops)", dir.display());
        // A change counts once it held still for one poll: an editor or
        // a formatter still writing is not built half-written.
        loop {
            tokio::time::sleep(POLL).await;
            let now = stamp(dir);
            if now != seen {
                tokio::time::sleep(POLL).await;
                if stamp(dir) == now {
                    seen = now;
                    break;
                }
            }
        }
    }
}

/// One build, test and deploy; whether it got as far as the server.
async fn cycle(dir: &Path, name: &str, client: &AdminClient) -> anyhow::Result<bool> {
    let started = Instant::now();
    let built = cargo(dir, &["build", "--release", "--target", "wasm32-wasip2"])?;
    let build_time = started.elapsed();
    if !built.status.success() {
        eprint!("{}", String::from_utf8_lossy(&built.stderr));
        println!("dev: build failed after {:.1} s; nothing deployed", build_time.as_secs_f64());
        return Ok(false);
    }
    let started = Instant::now();
    let tested = cargo(dir, &["test", "--target", "wasm32-wasip2"])?;
    let test_time = started.elapsed();
    let report = String::from_utf8_lossy(&tested.stdout).into_owned();
    let passed: usize = report
        .lines()
        .filter_map(|line| line.strip_prefix("test result: "))
        .filter_map(|line| line.split("; ").next()?.rsplit(' ').nth(1)?.parse::<usize>().ok())
        .sum();
    if !tested.status.success() {
        print!("{report}");
        eprint!("{}", String::from_utf8_lossy(&tested.stderr));
        println!(
            "dev: built in {:.1} s; tests failed after {:.1} s; nothing deployed",
            build_time.as_secs_f64(),
            test_time.as_secs_f64()
        );
        return Ok(false);
    }
    let file = format!("{}.wasm", crate::scaffold::wasm_file_stem(name));
    let wasm = dir.join("target/wasm32-wasip2/release").join(file);
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let started = Instant::now();
    let versions = format!("/admin/components/{}/versions", encode(name));
    let new = client.call("GET", &versions, Bytes::new()).await.is_err();
    let route = format!("/{name}");
    let query = if new { format!("?route={}", encode(&route)) } else { String::new() };
    let path = format!("/admin/components/{}{query}", encode(name));
    let answer = client.call("PUT", &path, Bytes::from(bytes)).await;
    let deploy_time = started.elapsed();
    let done = match answer {
        Ok(answer) if answer["unchanged"] == true => {
            format!("{name} version {} unchanged", answer["version"])
        }
        Ok(answer) if new => format!("deployed {name} version {} at {route}", answer["version"]),
        Ok(answer) => format!("deployed {name} version {}", answer["version"]),
        Err(error) => {
            println!("dev: built, {passed} tests passed; deploy refused: {error:#}");
            return Ok(false);
        }
    };
    println!(
        "dev: built in {:.1} s, {passed} tests passed in {:.1} s, {done} in {:.1} s",
        build_time.as_secs_f64(),
        test_time.as_secs_f64(),
        deploy_time.as_secs_f64()
    );
    Ok(true)
}

/// `cargo ARGS` in `dir`, its output captured.
fn cargo(dir: &Path, args: &[&str]) -> anyhow::Result<Output> {
    std::process::Command::new("cargo")
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running cargo {} in {}", args.join(" "), dir.display()))
}

/// The crate's `[package] name`, the component's name.
fn package_name(dir: &Path) -> anyhow::Result<String> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!("reading {} (is {} a crate?)", manifest.display(), dir.display())
    })?;
    let parsed: toml::Table =
        toml::from_str(&text).with_context(|| format!("in {}", manifest.display()))?;
    let name = parsed.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str());
    name.map(String::from).with_context(|| format!("{} has no [package] name", manifest.display()))
}

/// What changes when a source does: the newest modification time, and the
/// count and sizes of the files under `dir` outside `target/` and hidden
/// directories.
fn stamp(dir: &Path) -> (Option<SystemTime>, usize, u64) {
    let mut newest = None;
    let (mut files, mut bytes) = (0, 0);
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let skip = file_name == "target" || file_name.to_string_lossy().starts_with('.');
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if !skip {
                    pending.push(entry.path());
                }
                continue;
            }
            files += 1;
            bytes += meta.len();
            newest = newest.max(meta.modified().ok());
        }
    }
    (newest, files, bytes)
}
