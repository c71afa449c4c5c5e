//! `pitstop test-runner`: every test of a binary run, and a report in
//! cargo's words.
//!
//! wasm has no unwinding, so a failing test aborts the binary it is in: run
//! whole, the first failure would stop the rest and no `test result:` line
//! would be printed. So the binary is asked for its tests (`--list`, with
//! the user's filters), and each runs alone in an instance of its own (and
//! a keyspace of its own), its output captured. The report is what
//! libtest prints: a line per test, each failure's output (its panic
//! message; the wasm backtrace of the abort only with `--backtrace` or
//! `RUST_BACKTRACE`), and `test result:` with the counts.

use std::collections::BTreeSet;
use std::time::Instant;

use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::testing::runner::{Output, TestBinary, TestRun};

/// Most bytes of one test's output kept.
const CAPTURE: usize = 4 << 20;

/// Harness flags that only shape its own output: left out of the listing.
const OUTPUT_FLAGS: [&str; 6] =
    ["--nocapture", "--no-capture", "--show-output", "-q", "--quiet", "--backtrace"];

/// Run every test `test` selects; the exit status for cargo (0: all passed).
pub async fn run(test: TestRun) -> anyhow::Result<i32> {
    let binary = TestBinary::load(&test).await?;
    let args = &test.args;
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // What the harness answers without running tests goes through as it is.
    if has("--list") || has("--help") || has("-h") {
        let ran = binary.run(args, Output::Inherit).await?;
        return Ok(ran.status);
    }
    let backtrace = has("--backtrace")
        || std::env::var("RUST_BACKTRACE").is_ok_and(|v| !v.is_empty() && v != "0");
    let show_output = has("--nocapture") || has("--no-capture") || has("--show-output");
    let filters: Vec<String> = args
        .iter()
        .filter(|a| !OUTPUT_FLAGS.contains(&a.as_str()) && !a.starts_with("--test-threads"))
        .filter(|a| !a.starts_with("--color") && !a.starts_with("--format"))
        .cloned()
        .collect();
    let started = Instant::now();
    let every = list(&binary, &[]).await?;
    let chosen = list(&binary, &filters).await?;
    let mut with_ignored = filters.clone();
    if !has("--ignored") {
        with_ignored.push("--ignored".into());
    }
    let ignored = list(&binary, &with_ignored).await?;
    let to_run: Vec<&String> = match has("--ignored") || has("--include-ignored") {
        true => chosen.iter().collect(),
        false => chosen.iter().filter(|name| !ignored.contains(*name)).collect(),
    };
    let skipped = chosen.len() - to_run.len();

    println!("\nrunning {} tests", to_run.len());
    let mut failures = Vec::new();
    for name in &to_run {
        let pipe = MemoryOutputPipe::new(CAPTURE);
        let mut alone: Vec<String> = vec![(*name).clone(), "--exact".into(), "--nocapture".into()];
        if ignored.contains(*name) {
            alone.push("--include-ignored".into());
        }
        let ran = binary.run(&alone, Output::Capture(pipe.clone())).await?;
        let output = String::from_utf8_lossy(&pipe.contents()).into_owned();
        let passed = ran.status == 0 && output.contains("test result: ok. 1 passed");
        println!("test {name} ... {}", if passed { "ok" } else { "FAILED" });
        let told = own_output(&output, name);
        if passed && show_output && !told.is_empty() {
            println!("{told}");
        }
        if !passed {
            let mut told = told;
            match ran.trap {
                Some(trap) if backtrace => told.push_str(&format!("\n{trap:?}")),
                Some(trap) => told.push_str(&format!(
                    "\nthe test aborted ({}); --backtrace or RUST_BACKTRACE=1 shows where",
                    trap.root_cause()
                )),
                None => {}
            }
            failures.push((name, told));
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, told) in &failures {
            println!("---- {name} stdout ----\n{}\n", told.trim_end());
        }
        println!("failures:");
        for (name, _) in &failures {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; {skipped} ignored; 0 measured; {} filtered out; \
         finished in {:.2}s\n",
        if failures.is_empty() { "ok" } else { "FAILED" },
        to_run.len() - failures.len(),
        failures.len(),
        every.len() - chosen.len(),
        started.elapsed().as_secs_f64(),
    );
    Ok(if failures.is_empty() { 0 } else { 101 })
}

/// The tests of `binary` that `filters` select, by name.
async fn list(binary: &TestBinary, filters: &[String]) -> anyhow::Result<BTreeSet<String>> {
    let pipe = MemoryOutputPipe::new(CAPTURE);
    let mut args = filters.to_vec();
    args.extend(["--list".into(), "--format".into(), "terse".into()]);
    let ran = binary.run(&args, Output::Capture(pipe.clone())).await?;
    let listed = String::from_utf8_lossy(&pipe.contents()).into_owned();
    anyhow::ensure!(ran.status == 0, "listing the tests failed: {listed}");
    Ok(listed.lines().filter_map(|line| line.strip_suffix(": test")).map(String::from).collect())
}

/// What a test said, without the harness's own lines around it.
fn own_output(output: &str, name: &str) -> String {
    let started = format!("test {name} ... ");
    let lines: Vec<&str> = output
        .lines()
        .filter(|line| *line != "running 1 test" && !line.starts_with("test result: "))
        .map(|line| line.strip_prefix(&started).unwrap_or(line))
        .filter(|line| !matches!(*line, "ok" | "FAILED"))
        .collect();
    lines.join("\n").trim().to_string()
}
