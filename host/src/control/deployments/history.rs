//! A component's version history and moving along it: roll back to the
//! version before, or activate any stored version (forward after a
//! rollback, or back to serving after an undeploy).

use super::Deployments;
use crate::runtime::DeployError;

use super::records::VersionRecord;

impl Deployments {
    /// The version history of `name`, oldest first, and its active version
    /// (`None` once undeployed: the history and the stored versions are
    /// kept until a purge).
    pub fn versions(&self, name: &str) -> Result<(Option<u64>, Vec<VersionRecord>), DeployError> {
        let record = self.record(name)?.ok_or_else(|| DeployError::Unknown(name.to_string()))?;
        Ok((record.active, record.versions))
    }

    /// Make the version before the active one active again, from the cache.
    /// With a canary running, drop the canary instead: the active version
    /// serves everything again.
    pub async fn rollback(&self, name: &str) -> Result<u64, DeployError> {
        let _name = self.lock_name(name).await;
        let mut record = self.active_record(name)?;
        let active = record.active.expect("active_record checks it");
        if record.canary.is_some() {
            let _change = self.changes.lock().await;
            self.end_canary(&mut record, "rolled back", "asked to roll back");
            self.save(&record)?;
            self.registry.take_canary(name);
            self.metrics.rolled_back(name);
            return Ok(active);
        }
        let previous = record
            .versions
            .iter()
            .filter(|v| v.version < active && !v.withdrawn)
            .max_by_key(|v| v.version)
            .cloned()
            .ok_or_else(|| DeployError::NoEarlierVersion(name.to_string()))?;
        let deployment = self.load(name, &previous).await?;
        let _change = self.changes.lock().await;
        record.active = Some(previous.version);
        self.save(&record)?;
        self.registry.activate(deployment);
        self.metrics.rolled_back(name);
        tracing::info!(component = name, from = active, to = previous.version, "rolled back");
        Ok(previous.version)
    }

    /// Serve `version` of `name`, any version it keeps: forward after a
    /// rollback, or again after an undeploy (with the routes it had). A
    /// canary running beside the active version ends. The version already
    /// active is left as it is.
    pub async fn activate(&self, name: &str, version: u64) -> Result<u64, DeployError> {
        let _name = self.lock_name(name).await;
        let mut record =
            self.record(name)?.ok_or_else(|| DeployError::Unknown(name.to_string()))?;
        let wanted =
            record.versions.iter().find(|v| v.version == version).cloned().ok_or_else(|| {
                DeployError::UnknownVersion(format!("{name} has no version {version}"))
            })?;
        if record.active == Some(version) && record.canary.is_none() {
            return Ok(version);
        }
        // Its routes may have gone to another component meanwhile.
        self.check_routes(&record)?;
        let deployment = self.load(name, &wanted).await?;
        let _change = self.changes.lock().await;
        self.check_routes(&record)?;
        let from = record.active;
        self.end_canary(&mut record, "replaced", &format!("version {version} was activated"));
        record.active = Some(version);
        self.save(&record)?;
        self.registry.take_canary(name);
        self.registry.activate(deployment);
        self.refresh_routes();
        self.metrics.deployed(name);
        tracing::info!(component = name, from, to = version, "activated");
        Ok(version)
    }
}
