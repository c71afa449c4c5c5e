//! `pitstop serve --watch DIR`: deploy a `.wasm` file from DIR whenever it
//! changes, through the same path as the admin API (`NAME.wasm` deploys as
//! `NAME`). Nothing restarts; requests in flight finish on the old version.
//! A name new to the platform, which the config routes nowhere, gets the
//! route `/NAME` (unless another component has it), and the log says so.
//!
//! Polling rather than filesystem events: it behaves the same on every
//! filesystem (network mounts, containers' bind mounts), and a file is only
//! deployed once its size and mtime held still for one poll, so a build
//! that is still writing it is not deployed half-written.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::control::deployments::Deployments;
use crate::runtime::DeployError;

/// How often DIR is looked at.
pub const POLL: Duration = Duration::from_millis(300);

type Stamp = (SystemTime, u64);

/// Watch `dir` until `stop` resolves.
pub async fn watch(dir: PathBuf, deployments: Arc<Deployments>, stop: impl Future<Output = ()>) {
    tracing::info!(dir = %dir.display(), "watching for components");
    let mut stop = std::pin::pin!(stop);
    // Last stamp seen per file, and the stamp last deployed (or tried).
    let mut seen: HashMap<PathBuf, Stamp> = HashMap::new();
    let mut handled: HashMap<PathBuf, Stamp> = HashMap::new();
    loop {
        for (path, stamp) in scan(&dir) {
            let settled = seen.insert(path.clone(), stamp) == Some(stamp);
            if settled && handled.get(&path) != Some(&stamp) {
                handled.insert(path.clone(), stamp);
                deploy(&deployments, &path).await;
            }
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn deploy(deployments: &Deployments, path: &Path) {
    let Some(name) = path.file_stem().and_then(|s| s.to_str()) else { return };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read watched component");
            return;
        }
    };
    let new = !deployments.is_known(name).unwrap_or(true) && !deployments.is_routed_by_config(name);
    let route = format!("/{name}");
    let mut deployed = match new {
        true => deployments.ensure(name, bytes.clone(), Some(vec![route.clone()])).await,
        false => deployments.ensure(name, bytes.clone(), None).await,
    };
    if new && let Err(DeployError::Route(why)) = &deployed {
        tracing::warn!(component = name, "watch: {why}; deploying {name} without a route");
        deployed = deployments.ensure(name, bytes, None).await;
    }
    match deployed {
        Ok(Some(deployed)) if new => {
            let routes = deployments.routes_of(name);
            let at = if routes.is_empty() { "no route".to_string() } else { routes.join(", ") };
            tracing::info!(
                component = name,
                version = deployed.version,
                "watch: deployed, new, at {at}"
            )
        }
        Ok(Some(deployed)) => {
            tracing::info!(component = name, version = deployed.version, "watch: deployed")
        }
        Ok(None) => tracing::debug!(component = name, "watch: unchanged"),
        Err(error) => {
            tracing::warn!(component = name, %error, "watch: not deployed; the active version keeps serving")
        }
    }
}

fn scan(dir: &Path) -> Vec<(PathBuf, Stamp)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|p| {
            let meta = std::fs::metadata(&p).ok()?;
            Some((p, (meta.modified().ok()?, meta.len())))
        })
        .collect()
}
