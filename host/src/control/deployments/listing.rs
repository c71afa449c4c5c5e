//! The component listing of the admin API: each active component with its
//! routes, breaker, topics, traffic and canary; the names undeployed with
//! their versions kept.

use serde::Serialize;

use super::Deployments;
use super::records::find_version;
use super::routes::routes_in;
use crate::capabilities::bus::Topics;
use crate::runtime::DeployError;
use crate::runtime::canary::TrafficSummary;

/// A line of the component listing.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentInfo {
    /// The name.
    pub name: String,
    /// The active version.
    pub version: u64,
    /// sha256 of the active version's bytes.
    pub digest: String,
    /// Size of the active version's bytes.
    pub size: u64,
    /// When the active version was deployed.
    pub deployed_at: String,
    /// Route prefixes that reach it now.
    pub routes: Vec<String>,
    /// `active`.
    pub state: &'static str,
    /// The active version's circuit breaker.
    pub breaker: Option<crate::resilience::breaker::Snapshot>,
    /// The topics the active version publishes and subscribes to.
    pub topics: Option<crate::capabilities::bus::Topics>,
    /// What the active version's requests did since it was deployed (or
    /// restored).
    pub traffic: Option<TrafficSummary>,
    /// The version taking a share of the requests, if any.
    pub canary: Option<CanaryInfo>,
    /// How the last canary ended.
    pub last_canary: Option<super::records::CanaryEnd>,
}

/// A canary in the listing.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryInfo {
    /// Its version.
    pub version: u64,
    /// The share of requests it takes.
    pub percent: u8,
    /// Whether the platform judges it on its own.
    pub auto_rollback: bool,
    /// What its requests did.
    pub traffic: TrafficSummary,
}

/// A name undeployed with its history kept: what `activate` can serve
/// again.
#[derive(Debug, Clone, Serialize)]
pub struct UndeployedInfo {
    /// The name.
    pub name: String,
    /// `undeployed`.
    pub state: &'static str,
    /// Its newest stored version.
    pub last_version: u64,
    /// How many versions it keeps.
    pub versions: usize,
    /// When the newest was deployed.
    pub deployed_at: String,
}

impl Deployments {
    /// Every name undeployed but not purged, by name.
    pub fn undeployed(&self) -> Result<Vec<UndeployedInfo>, DeployError> {
        let mut infos = Vec::new();
        for record in self.records()? {
            if record.active.is_some() {
                continue;
            }
            let Some(last) = record.versions.iter().max_by_key(|v| v.version) else { continue };
            infos.push(UndeployedInfo {
                name: record.name.clone(),
                state: "undeployed",
                last_version: last.version,
                versions: record.versions.len(),
                deployed_at: last.deployed_at.clone(),
            });
        }
        Ok(infos)
    }

    /// Every active component, by name.
    pub fn list(&self) -> Result<Vec<ComponentInfo>, DeployError> {
        let table = self.route_table();
        let mut infos = Vec::new();
        for record in self.records()? {
            let Some(active) = record.active else { continue };
            let deployment = self.registry.get(&record.name);
            // The version serving now: a promote or rollback records the
            // change before the registry makes it, and the listing must not
            // say a version serves before it does.
            let serving = deployment.as_ref().map_or(active, |d| d.version);
            let Ok(version) = find_version(&record, serving) else { continue };
            infos.push(ComponentInfo {
                routes: routes_in(&table, &record.name),
                name: record.name.clone(),
                version: version.version,
                // What serves, not what the record says: on a cluster
                // they differ until this host has followed a change.
                digest: deployment
                    .as_ref()
                    .map_or_else(|| version.digest.clone(), |d| d.digest.clone()),
                size: version.size,
                deployed_at: version.deployed_at.clone(),
                state: "active",
                breaker: deployment.as_ref().map(|d| d.breaker.snapshot()),
                topics: deployment.as_ref().map(|d| Topics::clone(&d.topics)),
                traffic: deployment.as_ref().map(|d| d.traffic.snapshot().summary()),
                // A canary being promoted is the active version already.
                canary: (self.registry.canary(&record.name))
                    .filter(|canary| canary.deployment.version != version.version)
                    .map(|canary| CanaryInfo {
                        version: canary.deployment.version,
                        percent: canary.percent,
                        auto_rollback: canary.auto,
                        traffic: canary.deployment.traffic.snapshot().summary(),
                    }),
                last_canary: record.last_canary.clone(),
            });
        }
        Ok(infos)
    }
}
