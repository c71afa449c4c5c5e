//! The components' own tests, run as wasm inside pitstop: `cargo test
//! --target wasm32-wasip2` in `components/`, whose `.cargo/config.toml`
//! makes `pitstop test-runner` the runner. Run from here so the repo's one
//! test command covers them.

use std::path::Path;
use std::process::Output;

use crate::support::{guest_cargo_in, repo_root};

/// `cargo test --target wasm32-wasip2 ARGS` in `workspace`, with this build's
/// `pitstop` as the runner.
fn wasm_test(workspace: &Path, args: &[&str]) -> Output {
    let mut command = guest_cargo_in(
        &["test", "--target", "wasm32-wasip2"],
        &workspace.join("Cargo.toml"),
        &repo_root().join("target").join("wasm-tests"),
    );
    // Cargo finds the runner in `.cargo/config.toml` from the working dir.
    command.current_dir(workspace).args(args).env("PITSTOP_BIN", env!("CARGO_BIN_EXE_pitstop"));
    command.output().expect("running cargo test for wasm32-wasip2")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_services_unit_tests_pass_as_wasm() {
    let output =
        wasm_test(&repo_root().join("components"), &["-p", "user", "-p", "order", "-p", "payment"]);
    let log = text(&output);
    assert!(output.status.success(), "wasm-level tests failed:\n{log}");
    for test in [
        "registering_stores_the_user_and_publishes_user_created",
        "voiding_refunds_a_payment_or_rules_one_out",
        "a_payment_without_answer_is_voided_then_the_order_fails",
        "the_read_model_answers_when_the_user_service_cannot",
    ] {
        assert!(log.contains(&format!("tests::{test} ... ok")), "{test} did not run:\n{log}");
    }
    let passed: usize = log
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    // Every test the three crates define ran and passed, counted from
    // their sources: a test lost by the runner is a failure here.
    let defined: usize = ["user", "order", "payment"]
        .iter()
        .flat_map(|service| {
            let src = repo_root().join("components").join(service).join("src");
            std::fs::read_dir(src).unwrap().flatten().map(|file| file.path())
        })
        .map(|path| std::fs::read_to_string(path).unwrap().matches("#[test]").count())
        .sum();
    assert_eq!(passed, defined, "tests passed, of the {defined} the crates define:\n{log}");
}

/// A failing test fails the run, and stops nothing: the tests after it run
/// (each alone, in an instance of its own: wasm cannot unwind), the failure
/// is told in a few lines (its panic message; the wasm backtrace of the
/// abort only when asked for), and cargo's `test result:` line counts all.
#[test]
fn a_failing_wasm_test_fails_cargo_test_and_the_others_still_run() {
    let workspace = repo_root().join("tests/components");
    let mut command = guest_cargo_in(
        &["test", "--target", "wasm32-wasip2", "-p", "failing-tests"],
        &workspace.join("Cargo.toml"),
        &repo_root().join("target").join("wasm-tests"),
    );
    command.current_dir(&workspace).env("PITSTOP_BIN", env!("CARGO_BIN_EXE_pitstop"));
    let output = command.env_remove("RUST_BACKTRACE").output().unwrap();
    let log = text(&output);
    assert!(!output.status.success(), "a failing test must fail the run:\n{log}");
    for line in [
        "test tests::counts_from_one ... ok",
        "test tests::zz_is_wrong_on_purpose ... FAILED",
        "test tests::zzz_runs_after_the_failure ... ok",
        "assertion `left == right` failed: the deliberate failure",
        "the test aborted (wasm trap: wasm `unreachable` instruction executed); --backtrace or \
         RUST_BACKTRACE=1 shows where",
        "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out;",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
    assert!(!log.contains("wasm backtrace"), "the backtrace only when asked for:\n{log}");

    // Asked for, it is there; a filter runs only what it names.
    let mut command = guest_cargo_in(
        &["test", "--target", "wasm32-wasip2", "-p", "failing-tests"],
        &workspace.join("Cargo.toml"),
        &repo_root().join("target").join("wasm-tests"),
    );
    command.args(["--", "wrong", "--backtrace"]);
    command.current_dir(&workspace).env("PITSTOP_BIN", env!("CARGO_BIN_EXE_pitstop"));
    let log = text(&command.env_remove("RUST_BACKTRACE").output().unwrap());
    assert!(log.contains("wasm backtrace"), "{log}");
    assert!(
        log.contains(
            "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 2 filtered out;"
        ),
        "{log}"
    );
}

#[test]
fn calls_no_stub_answers_reach_components_loaded_from_paths() {
    let kvprobe = crate::support::test_components().join("kvprobe.wasm");
    let runner = format!(
        "{} test-runner --component kvprobe={}",
        env!("CARGO_BIN_EXE_pitstop"),
        kvprobe.display()
    );
    let workspace = repo_root().join("tests/components");
    let mut command = guest_cargo_in(
        &["test", "--target", "wasm32-wasip2", "-p", "caller-tests"],
        &workspace.join("Cargo.toml"),
        &repo_root().join("target").join("wasm-tests"),
    );
    command.current_dir(&workspace).env("CARGO_TARGET_WASM32_WASIP2_RUNNER", runner);
    let output = command.output().expect("running cargo test for wasm32-wasip2");
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("tests::unstubbed_calls_reach_the_real_component ... ok"), "{log}");
}
