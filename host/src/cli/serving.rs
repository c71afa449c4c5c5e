//! The commands that run a server in this process: `serve`, and `dev
//! --serve`; both stop gracefully on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::control::client::AdminClient;
use crate::{Config, Platform, PlatformOptions};
use anyhow::Context;

pub(super) async fn serve(options: PlatformOptions) -> anyhow::Result<()> {
    // Registered before anything else: a SIGTERM sent while the platform
    // starts, or the moment it says it listens, must stop it gracefully,
    // not kill it with the signal's default action.
    let stop = shutdown_signal().context("listening for SIGINT and SIGTERM")?;
    let platform = Platform::start(options).await?;
    println!("pitstop listening on http://{}", platform.addr());
    println!("pitstop admin on http://{}", platform.admin_addr());
    stop.await;
    tracing::info!("shutting down");
    platform.shutdown().await
}

/// `pitstop dev --serve`: the dev loop against a server in this process,
/// on the embedded store with the built-in services, until the loop ends
/// (`--once`) or a signal stops both.
pub(super) async fn dev_with_server(
    dir: PathBuf,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    once: bool,
) -> anyhow::Result<i32> {
    let stop = shutdown_signal().context("listening for SIGINT and SIGTERM")?;
    let data_dir = dir.join(crate::control::dev::SERVE_DATA_DIR);
    let platform = Platform::start(PlatformOptions {
        listen,
        admin_listen,
        // Made and kept in the data dir, where the client reads it.
        admin_token: None,
        data_dir: data_dir.clone(),
        config: Config::default(),
        watch: None,
        cluster: None,
        strict: false,
    })
    .await?;
    let admin_url = format!("http://{}", platform.admin_addr());
    println!(
        "dev: serving on http://{}, admin API on {admin_url} (--data-dir {} for its token)",
        platform.addr(),
        data_dir.display()
    );
    let client = AdminClient::new(&admin_url, None, &data_dir)?;
    let status = tokio::select! {
        status = crate::control::dev::run(&dir, &client, once) => status?,
        () = stop => 0,
    };
    platform.shutdown().await?;
    Ok(status)
}

/// Ctrl-C (SIGINT) or SIGTERM; the handlers are in place when this returns.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
