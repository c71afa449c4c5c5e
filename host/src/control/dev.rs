//! `pitstop dev [DIR]`: the inner loop of writing a service. Build the crate
//! in DIR for `wasm32-wasip2` (or, for a project with a `pitstop-dev.toml`,
//! run its build command), run its tests, deploy it to the server (a name
//! new to the server at `/NAME`), and again whenever its sources change,
//! printing one line per cycle with the time each step took. A failed
//! build or test deploys nothing; the version serving stays. The
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
    let mut project = Project::in_dir(dir)?;
    client.call("GET", "/admin/components", Bytes::new()).await.context(
        "is a server running? Start one with `pitstop serve`, or run `pitstop dev --serve` for \
         a server of its own",
    )?;
    let mut seen = stamp(dir, &project.ignored);
    loop {
        let ok = cycle(dir, &project, client).await?;
        if once {
            return Ok(if ok { 0 } else { 1 });
        }
        println!("dev: watching {} for changes (Ctrl-C stops)", dir.display());
        // A change counts once it held still for one poll: an editor or
        // a formatter still writing is not built half-written.
        loop {
            tokio::time::sleep(POLL).await;
            let now = stamp(dir, &project.ignored);
            if now != seen {
                tokio::time::sleep(POLL).await;
                if stamp(dir, &project.ignored) == now {
                    seen = now;
                    // The project's own config may be what changed.
                    match Project::in_dir(dir) {
                        Ok(changed) => {
                            project = changed;
                            break;
                        }
                        Err(error) => println!("dev: {error:#}; waiting for a fix"),
                    }
                }
            }
        }
    }
}

/// One build, test and deploy; whether it got as far as the server.
async fn cycle(dir: &Path, project: &Project, client: &AdminClient) -> anyhow::Result<bool> {
    let name = &project.name;
    let started = Instant::now();
    let built = run_step(dir, &project.build).await?;
    let build_time = started.elapsed();
    if !built.status.success() {
        print!("{}", String::from_utf8_lossy(&built.stdout));
        eprint!("{}", String::from_utf8_lossy(&built.stderr));
        println!("dev: build failed after {:.1} s; nothing deployed", build_time.as_secs_f64());
        return Ok(false);
    }
    let started = Instant::now();
    let mut passed = "no tests".to_string();
    if let Some(test) = &project.test {
        let tested = run_step(dir, test).await?;
        let report = String::from_utf8_lossy(&tested.stdout).into_owned();
        if !tested.status.success() {
            print!("{report}");
            eprint!("{}", String::from_utf8_lossy(&tested.stderr));
            println!(
                "dev: built in {:.1} s; tests failed after {:.1} s; nothing deployed",
                build_time.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            return Ok(false);
        }
        // cargo's `test result: ok. N passed; ...` lines, one per binary;
        // other test tools' output is not counted.
        let counts: Vec<usize> = report
            .lines()
            .filter_map(|line| line.strip_prefix("test result: "))
            .filter_map(|line| line.split("; ").next()?.rsplit(' ').nth(1)?.parse().ok())
            .collect();
        passed = match counts.is_empty() {
            false => format!("{} tests passed", counts.iter().sum::<usize>()),
            true => "tests passed".to_string(),
        };
    }
    let test_time = started.elapsed();
    let wasm = &project.wasm;
    let bytes = match std::fs::read(wasm) {
        Ok(bytes) => bytes,
        Err(error) => {
            println!(
                "dev: built, but {} cannot be read ({error}); nothing deployed",
                wasm.display()
            );
            return Ok(false);
        }
    };
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
            println!("dev: built, {passed}; deploy refused: {error:#}");
            return Ok(false);
        }
    };
    println!(
        "dev: built in {:.1} s, {passed} in {:.1} s, {done} in {:.1} s",
        build_time.as_secs_f64(),
        test_time.as_secs_f64(),
        deploy_time.as_secs_f64()
    );
    Ok(true)
}

/// One step's program and arguments, run in `dir`, its output captured.
/// Awaited, not waited for on the thread: with `--serve` the server shares
/// this runtime, and a build of a minute must not hold one of its workers.
async fn run_step(dir: &Path, step: &[String]) -> anyhow::Result<Output> {
    tokio::process::Command::new(&step[0])
        .args(&step[1..])
        .current_dir(dir)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {} in {}", step.join(" "), dir.display()))
}

/// What `pitstop dev` builds, tests and deploys, and which changes count.
struct Project {
    /// The component's name.
    name: String,
    build: Vec<String>,
    test: Option<Vec<String>>,
    /// What the build makes.
    wasm: PathBuf,
    /// Paths under the directory whose changes are not the sources'.
    ignored: Vec<PathBuf>,
}

/// `pitstop-dev.toml`: a project that is not a Rust crate (or one built
/// otherwise). Commands run with `sh -c` in the project's directory.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DevConfig {
    name: String,
    build: String,
    wasm: PathBuf,
    test: Option<String>,
    #[serde(default)]
    ignore: Vec<PathBuf>,
}

/// Where `pitstop dev --serve` keeps its server's data, under the
/// project's directory (inside `target/`, which is never a source).
pub const SERVE_DATA_DIR: &str = "target/pitstop-dev";

/// The file that describes a project built by commands of its own.
pub const DEV_CONFIG: &str = "pitstop-dev.toml";

impl Project {
    /// The project in `dir`: its `pitstop-dev.toml`, else its `Cargo.toml`.
    fn in_dir(dir: &Path) -> anyhow::Result<Project> {
        let config = dir.join(DEV_CONFIG);
        if config.exists() {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let parsed: DevConfig =
                toml::from_str(&text).with_context(|| format!("in {}", config.display()))?;
            let shell = |command: String| vec!["sh".to_string(), "-c".to_string(), command];
            let wasm = dir.join(&parsed.wasm);
            // The build's output is not a source: its change starts no cycle.
            let mut ignored: Vec<PathBuf> = parsed.ignore.iter().map(|p| dir.join(p)).collect();
            ignored.push(wasm.clone());
            ignored.push(dir.join("node_modules"));
            // Holds SERVE_DATA_DIR, which `--serve` writes all the time.
            ignored.push(dir.join("target"));
            return Ok(Project {
                name: parsed.name,
                build: shell(parsed.build),
                test: parsed.test.map(shell),
                wasm,
                ignored,
            });
        }
        let name = package_name(dir).with_context(|| {
            format!("{} is neither a crate nor has a {DEV_CONFIG}", dir.display())
        })?;
        let cargo = |args: &[&str]| {
            std::iter::once("cargo").chain(args.iter().copied()).map(String::from).collect()
        };
        let file = format!("{}.wasm", crate::scaffold::wasm_file_stem(&name));
        Ok(Project {
            wasm: dir.join("target/wasm32-wasip2/release").join(file),
            name,
            build: cargo(&["build", "--release", "--target", "wasm32-wasip2"]),
            // In the release profile, so the tests reuse the build's
            // dependencies: a new skeleton's first test took 31 s in the
            // test profile, 4 s in release, after its 24 s build.
            test: Some(cargo(&["test", "--release", "--target", "wasm32-wasip2"])),
            ignored: vec![dir.join("target")],
        })
    }
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
/// count and sizes of the files under `dir` outside `ignored` and hidden
/// directories.
fn stamp(dir: &Path, ignored: &[PathBuf]) -> (Option<SystemTime>, usize, u64) {
    let mut newest = None;
    let (mut files, mut bytes) = (0, 0);
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            if file_name.to_string_lossy().starts_with('.') || ignored.contains(&entry.path()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
                continue;
            }
            files += 1;
            bytes += meta.len();
            newest = newest.max(meta.modified().ok());
        }
    }
    (newest, files, bytes)
}
