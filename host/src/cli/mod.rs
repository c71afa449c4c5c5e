//! The `pitstop` binary's command line (`main.rs` only calls [`main`]):
//! its arguments ([`args`]), what each command does ([`run`]), and the
//! commands that serve in this process ([`serving`]).

mod args;
mod run;
mod serving;

use std::process::ExitCode;

use crate::telemetry::{LogFormat, LogTarget, Telemetry};
use anyhow::Context;
use args::{Cli, Command};
use clap::Parser;

/// A failed command prints one line, `error: ` and the chain of causes,
/// and exits with 1: never a backtrace, whatever `RUST_BACKTRACE` says (a
/// user's mistake is not a crash to debug). A cause spanning lines (a
/// compiler's message relayed by the admin API) is joined into the one.
pub fn main() -> ExitCode {
    match start(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = format!("{error:#}");
            let lines: Vec<&str> =
                message.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
            eprintln!("error: {}", lines.join(" "));
            ExitCode::FAILURE
        }
    }
}

fn start(cli: Cli) -> anyhow::Result<()> {
    let telemetry = match &cli.command {
        // The server's log is its output.
        Command::Serve { log_format, .. } => Telemetry::init(
            "warn,pitstop_host=info,pitstop_gateway=info,guest=info",
            *log_format,
            LogTarget::Stdout,
        )?,
        // Under cargo test, the guests' info logs would drown the test output.
        Command::TestRunner { .. } | Command::New { .. } | Command::Init { .. } => {
            Telemetry::init("warn", LogFormat::Pretty, LogTarget::Stderr)?
        }
        // The other commands answer on stdout.
        _ => Telemetry::init(
            "warn,pitstop_host=info,pitstop_gateway=info",
            LogFormat::Pretty,
            LogTarget::Stderr,
        )?,
    };
    // Fail points named in `FAILPOINTS`, for the crash tests; for the
    // whole run (dropping the scenario would clear them).
    #[cfg(feature = "failpoints")]
    let _fail_points = fail::FailScenario::setup();
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    let result = runtime.block_on(run::run(cli.command));
    telemetry.shutdown();
    result
}
