//! The `pitstop` command.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pitstop_host::{Config, Platform, PlatformOptions};
use tracing_subscriber::EnvFilter;

/// Run microservices as WebAssembly components, swappable while serving.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the platform: the gateway with the built-in user, order and
    /// payment services, plus whatever the config file adds.
    Serve {
        /// Address the gateway listens on.
        #[arg(long, env = "PITSTOP_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Directory for storage (created if missing).
        #[arg(long, env = "PITSTOP_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// A pitstop.toml; without it the built-in defaults apply.
        #[arg(long, env = "PITSTOP_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve { listen, data_dir, config } => {
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
            runtime.block_on(serve(PlatformOptions { listen, data_dir, config }))
        }
    }
}

async fn serve(options: PlatformOptions) -> anyhow::Result<()> {
    let platform = Platform::start(options).await?;
    println!("pitstop listening on http://{}", platform.addr());
    shutdown_signal().await;
    tracing::info!("shutting down");
    platform.shutdown().await
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default of info for pitstop and
/// the guests, warn for wasmtime and everything else.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,pitstop_host=info,pitstop_gateway=info,guest=info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
