//! What is persisted about each component name: one JSON record per name in
//! the records keyspace (the sled tree `pitstop/components`, or a cluster's
//! `PITSTOP_DEPLOYMENTS`), read and written only here.

use serde::{Deserialize, Serialize};

use super::Deployments;
use crate::runtime::DeployError;

/// What is persisted about one component name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentRecord {
    /// The name.
    pub name: String,
    /// The version serving now; `None` once undeployed.
    pub active: Option<u64>,
    /// The version number the next deploy gets; never reused.
    pub next_version: u64,
    /// Route prefixes given at deploy time (`?route=`), besides the
    /// configured table.
    pub routes: Vec<String>,
    /// Every version ever deployed, oldest first.
    pub versions: Vec<VersionRecord>,
    /// The version taking a share of the requests besides the active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryRecord>,
    /// How the last canary ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_canary: Option<CanaryEnd>,
    /// The stored bytes this record was read from (`None`: new): saving it
    /// expects them unchanged, so two hosts changing one name at once do
    /// not overwrite each other.
    #[serde(skip)]
    pub(super) read_from: Option<Vec<u8>>,
}

/// A canary, as persisted: a restart serves it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryRecord {
    /// Its version.
    pub version: u64,
    /// The share of requests it takes, 1 to 99.
    pub percent: u8,
    /// Whether the platform judges it on its own.
    pub auto_rollback: bool,
}

/// How a canary ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryEnd {
    /// Its version.
    pub version: u64,
    /// `promoted`, `rolled back` or `replaced`.
    pub outcome: String,
    /// Why, in words.
    pub reason: String,
    /// When, RFC 3339.
    pub at: String,
}

/// One deployed version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Its number.
    pub version: u64,
    /// sha256 of its bytes.
    pub digest: String,
    /// Size of its bytes.
    pub size: u64,
    /// When it was deployed, RFC 3339.
    pub deployed_at: String,
    /// A canary that was rolled back or replaced before it was ever
    /// active: a rollback never goes back to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withdrawn: bool,
}

impl Deployments {
    pub(super) fn record(&self, name: &str) -> Result<Option<ComponentRecord>, DeployError> {
        // Up to date with every host's changes (a cluster's records).
        self.records.sync()?;
        match self.records.get(name.as_bytes())? {
            None => Ok(None),
            Some(bytes) => parse(&bytes)
                .map(Some)
                .map_err(|e| DeployError::Storage(format!("record of {name} is corrupt: {e}"))),
        }
    }

    pub(super) fn active_record(&self, name: &str) -> Result<ComponentRecord, DeployError> {
        match self.record(name)? {
            Some(record) if record.active.is_some() => Ok(record),
            _ => Err(DeployError::Unknown(name.to_string())),
        }
    }

    pub(super) fn records(&self) -> Result<Vec<ComponentRecord>, DeployError> {
        let mut records = Vec::new();
        for entry in self.records.range_from(std::ops::Bound::Unbounded) {
            let (_, bytes) = entry?;
            records.push(
                parse(&bytes)
                    .map_err(|e| DeployError::Storage(format!("corrupt component record: {e}")))?,
            );
        }
        Ok(records)
    }

    /// Store `record`, unless the stored one is no longer the one it was
    /// read from (another host of the cluster changed the name meanwhile).
    pub(super) fn save(&self, record: &ComponentRecord) -> Result<(), DeployError> {
        let json = serde_json::to_vec(record).expect("serialising a record cannot fail");
        self.replace(record, Some(json))
    }

    /// Remove `record` (a purge), under the same condition as [`Self::save`].
    pub(super) fn forget(&self, record: &ComponentRecord) -> Result<(), DeployError> {
        self.replace(record, None)
    }

    fn replace(&self, record: &ComponentRecord, json: Option<Vec<u8>>) -> Result<(), DeployError> {
        let key = record.name.as_bytes();
        let mut changed = false;
        let saved = self.records.transact(&mut || {
            if self.records.get(key).ok()? != record.read_from {
                changed = true;
                return None;
            }
            let mut batch = crate::storage::Batch::default();
            match &json {
                Some(json) => batch.insert(key, json.clone()),
                None => batch.remove(key),
            }
            Some(batch)
        })?;
        if changed {
            return Err(DeployError::Concurrent(record.name.clone()));
        }
        if !saved {
            return Err(DeployError::Storage(format!(
                "the record of {} could not be read",
                record.name
            )));
        }
        // The swap that follows is announced to the client as done: it must
        // survive a crash.
        self.records.durable()?;
        Ok(())
    }
}

/// The digest of `record`'s active version, if it has one.
pub(super) fn active_digest(record: &ComponentRecord) -> Option<&String> {
    record.active.and_then(|v| find_version(record, v).ok()).map(|v| &v.digest)
}

pub(super) fn find_version(
    record: &ComponentRecord,
    version: u64,
) -> Result<&VersionRecord, DeployError> {
    record.versions.iter().find(|v| v.version == version).ok_or_else(|| {
        DeployError::Storage(format!(
            "record of {} lacks its active version {version}",
            record.name
        ))
    })
}

/// A stored record, remembering the bytes it was read from.
fn parse(bytes: &[u8]) -> Result<ComponentRecord, serde_json::Error> {
    let mut record: ComponentRecord = serde_json::from_slice(bytes)?;
    record.read_from = Some(bytes.to_vec());
    Ok(record)
}
