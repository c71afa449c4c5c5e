//! `pitstop serve --watch DIR`: deploy a `.wasm` file from DIR whenever it
//! changes, through the same path as the admin API (`NAME.wasm` deploys as
//! `NAME`). Nothing restarts; requests in flight finish on the old version.
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
    match deployments.ensure(name, bytes).await {
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
