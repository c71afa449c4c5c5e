//! On a cluster, the changes other hosts make: every host watches the
//! shared records and brings what it serves in line with them, so a deploy,
//! rollback or undeploy through any host's admin API is served by all.

use std::future::Future;
use std::time::Duration;

use super::records::find_version;
use super::{ComponentRecord, Deployments};
use crate::runtime::DeployError;

/// How often the records are compared with what serves even when no change
/// was seen: catches a change skipped while this host was changing the
/// same name itself.
const RECHECK: Duration = Duration::from_secs(5);

impl Deployments {
    /// Follow the records as other hosts change them, until `stop`
    /// resolves. Returns at once where only this host writes them.
    pub async fn follow(self: std::sync::Arc<Self>, stop: impl Future<Output = ()>) {
        let Some(mut changes) = self.records.changes() else { return };
        tokio::pin!(stop);
        loop {
            self.reconcile().await;
            tokio::select! {
                () = &mut stop => return,
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Serve what every record says, for the names no change of this
    /// host's own is under way for.
    async fn reconcile(&self) {
        let records = match self.records() {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%error, "cannot read the cluster's deployments");
                return;
            }
        };
        let mut changed = false;
        for record in &records {
            let Some(_name) = self.try_lock_name(&record.name) else { continue };
            match self.follow_record(record).await {
                Ok(followed) => changed |= followed,
                Err(error) => {
                    tracing::error!(component = record.name, %error, "cannot follow a deploy")
                }
            }
        }
        // Purged through another host: no record left.
        let registry = &*self.registry;
        let serving: Vec<String> = registry.active().keys().cloned().collect();
        for name in serving.iter().filter(|n| !records.iter().any(|r| &r.name == *n)) {
            let Some(_name) = self.try_lock_name(name) else { continue };
            // Read again under the name's lock: a first deploy of this
            // name may have finished since the records above were read.
            if !matches!(self.record(name), Ok(None)) {
                continue;
            }
            registry.take_canary(name);
            registry.remove(name);
            self.runtime.forget(name);
            tracing::info!(component = name, "followed a purge");
            changed = true;
        }
        if changed {
            let _change = self.changes.lock().await;
            self.refresh_routes();
        }
    }

    /// Make this host serve what `record` says (its active version and its
    /// canary); the caller holds the name's lock. Returns whether anything
    /// changed.
    pub(super) async fn follow_record(
        &self,
        record: &ComponentRecord,
    ) -> Result<bool, DeployError> {
        let registry = &*self.registry;
        let name = &record.name;
        let Some(active) = record.active else {
            let removed = registry.remove(name).is_some();
            registry.take_canary(name);
            if removed {
                tracing::info!(component = name, "followed an undeploy");
            }
            return Ok(removed);
        };
        let mut changed = false;
        let wanted = find_version(record, active)?;
        // Version and bytes: a purge and a new deploy number from 1 again.
        let serving = registry.get(name).map(|d| (d.version, d.digest.clone()));
        if serving.as_ref().map(|(v, d)| (*v, d.as_str())) != Some((active, wanted.digest.as_str()))
        {
            let deployment = self.load(name, wanted).await?;
            let _change = self.changes.lock().await;
            registry.activate(deployment);
            tracing::info!(component = name, version = active, "followed a deploy");
            changed = true;
        }
        let canary = registry.canary(name).map(|c| c.deployment.version);
        match (&record.canary, canary) {
            (Some(wanted), serving) if serving != Some(wanted.version) => {
                self.serve_canary(record, false).await;
                changed = true;
            }
            (None, Some(_)) => {
                registry.take_canary(name);
                changed = true;
            }
            _ => {}
        }
        Ok(changed)
    }
}
