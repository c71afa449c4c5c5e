//! The control plane: deploy, swap, roll back and remove components while
//! traffic flows, persisted so that a restart serves exactly what was active.
//!
//! Storage, all under the data dir:
//! - sled tree `pitstop/components`: one JSON [`ComponentRecord`] per name
//!   (active version, version history, routes given at deploy);
//! - `components/<sha256>.wasm`: the bytes of every version, by digest;
//! - `cache/`: compiled artifacts, the runtime's
//!   ([`crate::runtime::artifacts::ArtifactCache`], set up by `platform.rs`).
//!
//! Every deploy happens in the same order: validate (the name, the bytes,
//! the import and export names: [`crate::runtime::world`]), compile (or load from
//! cache), link and `declare`, check the routes again, store the bytes,
//! persist the record, and only then swap the registry and the routes; the
//! compiled artifact is cached last. Whatever fails before the swap leaves
//! the active version serving, untouched, and nothing of the refused
//! component on disk.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use pitstop_gateway::{Gateway, RouteTable};

mod blobs;
mod canary;
mod follow;
mod history;
mod listing;
mod names;
mod records;
mod routes;

pub use canary::CanaryPlan;
pub use listing::{CanaryInfo, ComponentInfo, UndeployedInfo};
pub use records::{CanaryEnd, CanaryRecord, ComponentRecord, VersionRecord};
use records::{active_digest, find_version};

use crate::events::EventQueue;
use crate::metrics::Metrics;
use crate::naming::is_valid_name;
use crate::runtime::artifacts::hex_sha256;
use crate::runtime::backend::RuntimeBackend;
use crate::runtime::registry::{Deployment, Registry};
use crate::runtime::world::WorldError;
use crate::runtime::world::looks_like_component;
use crate::runtime::{DeployError, Parts, Runtime};
use crate::storage::embedded::SledKeyspace;
use crate::storage::jetstream::JetStreamStore;
use crate::storage::{Keyspace, KeyspaceStore};
use blobs::Blobs;

/// The result of a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployed {
    /// The version now active.
    pub version: u64,
    /// Whether the name was new (never deployed, or purged).
    pub created: bool,
    /// The bytes (and routes) were those of the active version already:
    /// nothing was deployed, and no version added.
    pub unchanged: bool,
}

/// Deploys and tracks components; shared by the admin API, the watcher and start-up.
pub struct Deployments {
    /// For preparing components; what it shares, the control plane holds
    /// itself (below).
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    keyspaces: Arc<dyn KeyspaceStore>,
    bus: Arc<dyn EventQueue>,
    // One record per name: a tree of the embedded store, or on a cluster
    // the keyspace every host shares (`PITSTOP_DEPLOYMENTS`), which each
    // host follows (follow.rs).
    records: Arc<dyn Keyspace>,
    blobs: Blobs,
    static_routes: Vec<(String, String)>,
    gateway: Gateway<RuntimeBackend>,
    // Two locks, so that a slow deploy (a large component compiling, a
    // `declare` that loops until its deadline) holds up no other name:
    // - `names`: one per name, held for the whole of a change to that name
    //   (compile and `declare` included), so its record and version numbers
    //   change one step at a time;
    // - `changes`: across names, held only for the moments that read or
    //   write what names share (routes, the registry): checking routes,
    //   saving a record and activating it.
    // Always `names` first. Requests take neither.
    names: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    changes: tokio::sync::Mutex<()>,
}

impl Deployments {
    /// The control plane over `runtime` and the host's `parts`, storing
    /// under `data_dir` (and in
    /// `cluster`'s shared store when given), feeding routes to `gateway`.
    /// `static_routes` are the configured (or built-in) `(prefix,
    /// component)` pairs.
    pub fn new(
        runtime: Arc<Runtime>,
        parts: &Parts,
        data_dir: &Path,
        static_routes: Vec<(String, String)>,
        gateway: Gateway<RuntimeBackend>,
        cluster: Option<Arc<JetStreamStore>>,
    ) -> Result<Self, DeployError> {
        let files = |dir: &Path| {
            let dir = dir.to_path_buf();
            move |e: std::io::Error| DeployError::Storage(format!("{}: {e}", dir.display()))
        };
        let blobs = data_dir.join("components");
        std::fs::create_dir_all(&blobs).map_err(files(&blobs))?;
        let records: Arc<dyn Keyspace> = match &cluster {
            Some(cluster) => cluster.open_platform("DEPLOYMENTS")?,
            None => Arc::new(SledKeyspace::new(parts.db.open_tree("pitstop/components")?)),
        };
        let blobs = Blobs::new(blobs, cluster);
        // Fail now, not at the first request, if the configured table is invalid.
        RouteTable::new(static_routes.clone()).map_err(|e| DeployError::Route(e.to_string()))?;
        Ok(Deployments {
            runtime,
            registry: parts.registry.clone(),
            metrics: parts.metrics.clone(),
            keyspaces: parts.keyspaces.clone(),
            bus: parts.bus.clone(),
            records,
            blobs,
            static_routes,
            gateway,
            names: Default::default(),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// Activate every persisted active version, from the artifact cache. A
    /// version that cannot be loaded (its bytes lost, say) is logged and left
    /// out; the others serve, and `/ready` reports a routed one missing.
    pub async fn restore(&self) -> Result<(), DeployError> {
        let _change = self.changes.lock().await;
        for record in self.records()? {
            let Some(active) = record.active else { continue };
            let loaded = match find_version(&record, active) {
                Ok(version) => self.load(&record.name, version).await,
                Err(error) => Err(error),
            };
            match loaded {
                Ok(deployment) => {
                    self.registry.activate(deployment);
                    tracing::info!(component = record.name, version = active, "restored");
                    self.restore_canary(&record).await;
                }
                Err(error) => {
                    tracing::error!(component = record.name, version = active, %error, "cannot restore");
                }
            }
        }
        self.refresh_routes();
        Ok(())
    }

    /// Deploy `bytes` as `name` unless that exact component is already the
    /// active version. For start-up seeding and the watcher; `routes`, when
    /// given, replace those of earlier deploys.
    pub async fn ensure(
        &self,
        name: &str,
        bytes: Vec<u8>,
        routes: Option<Vec<String>>,
    ) -> Result<Option<Deployed>, DeployError> {
        self.deploy_unless_active(name, bytes, routes, true, None).await
    }

    /// Whether the config's route table leads anywhere to `name`.
    pub fn is_routed_by_config(&self, name: &str) -> bool {
        self.static_routes.iter().any(|(_, component)| component == name)
    }

    /// The gateway's readiness report, as `/ready` answers it.
    pub async fn readiness(&self) -> pitstop_gateway::HealthReport {
        self.gateway.readiness().await
    }

    /// Whether `name` was ever deployed (and not purged).
    pub fn is_known(&self, name: &str) -> Result<bool, DeployError> {
        Ok(self.record(name)?.is_some())
    }

    /// Make `bytes` the new active version of `name`. `routes`, when given,
    /// replace the routes given at earlier deploys.
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Vec<u8>,
        routes: Option<Vec<String>>,
    ) -> Result<Deployed, DeployError> {
        let deployed = self.deploy_unless_active(name, bytes, routes, false, None).await?;
        Ok(deployed.expect("deploys whenever unchanged is not skipped"))
    }

    /// The one deploy path. With `skip_unchanged`, bytes identical to the
    /// active version deploy nothing (`Ok(None)`); the check happens under
    /// the change lock and hashes the bytes once. With `canary`, the new
    /// version becomes the canary instead of the active one.
    async fn deploy_unless_active(
        &self,
        name: &str,
        bytes: Vec<u8>,
        routes: Option<Vec<String>>,
        skip_unchanged: bool,
        canary: Option<CanaryPlan>,
    ) -> Result<Option<Deployed>, DeployError> {
        if !is_valid_name(name) {
            return Err(DeployError::InvalidName(name.to_string()));
        }
        if !looks_like_component(&bytes) {
            return Err(DeployError::NotAComponent(
                "expected the component-model header; this is a core module or not wasm at all"
                    .into(),
            ));
        }
        let digest = hex_sha256(&bytes);
        let _name = self.lock_name(name).await;
        // Stable until the end: every change to this name holds its lock
        // (on a cluster, the save finds out if another host changed it).
        let existing = self.record(name)?;
        if skip_unchanged
            && let Some(record) = existing.as_ref().filter(|r| active_digest(r) == Some(&digest))
        {
            // Deployed already, maybe by another host of the cluster
            // moments ago: serve it here too.
            if self.follow_record(record).await? {
                let _change = self.changes.lock().await;
                self.refresh_routes();
            }
            return Ok(None);
        }
        if let Some(record) = existing.as_ref()
            && canary.is_none()
            && active_digest(record) == Some(&digest)
            && routes.as_ref().is_none_or(|routes| *routes == record.routes)
        {
            let version = record.active.expect("it has an active digest");
            tracing::info!(component = name, version, "deployed the active version's bytes again");
            return Ok(Some(Deployed { version, created: false, unchanged: true }));
        }
        let created = existing.is_none();
        let mut record = existing.unwrap_or_else(|| ComponentRecord {
            name: name.to_string(),
            active: None,
            next_version: 1,
            routes: Vec::new(),
            versions: Vec::new(),
            canary: None,
            last_canary: None,
            read_from: None,
        });
        if canary.is_some() && record.active.is_none() {
            return Err(DeployError::Canary(format!(
                "{name} has no active version for a canary to run beside; deploy it first"
            )));
        }
        if let Some(routes) = routes {
            record.routes = routes;
        }
        // Refuse a route clash before compiling; checked again before saving.
        self.check_routes(&record)?;

        // Milliseconds, where compiling can take most of a minute.
        crate::runtime::world::check(&bytes).map_err(|error| match error {
            WorldError::Mismatch(why) => DeployError::Incompatible(why),
            WorldError::Malformed(why) => DeployError::Invalid(why),
        })?;

        let size = bytes.len() as u64;
        let source = bytes.clone();
        let keyspace = self.keyspace(name)?;
        let mut prepared =
            self.runtime.prepare(name, &digest, move || Ok(source), &keyspace).await?;
        let (unkept, cached) = (prepared.take_unkept(), prepared.cached());

        // On a cluster, in the object store before the record names them:
        // slow, so outside the lock every name shares (a component refused
        // below leaves its bytes there, by digest, to no one's harm).
        self.blobs.share(&digest, &bytes).await?;
        let change = self.changes.lock().await;
        // Another name may have claimed one of the routes meanwhile.
        self.check_routes(&record)?;
        // Only components that passed every check are kept here: their
        // bytes now, their compiled artifact once they serve.
        self.blobs.keep(&digest, &bytes)?;
        let version = record.next_version;
        record.next_version += 1;
        // A canary running beside the old active version ends either way.
        self.end_canary(&mut record, "replaced", &format!("version {version} was deployed"));
        match &canary {
            Some(plan) => record.canary = Some(plan.record(version)),
            None => record.active = Some(version),
        }
        record.versions.push(VersionRecord {
            version,
            digest: digest.clone(),
            size,
            deployed_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
            withdrawn: false,
        });
        self.save(&record)?;

        let deployment = self.runtime.deployment(
            name,
            version,
            digest.clone(),
            size as usize,
            prepared,
            keyspace,
        );
        match canary {
            Some(plan) => self.start_canary(deployment, plan),
            None => {
                self.registry.take_canary(name);
                self.registry.activate(deployment);
            }
        }
        self.refresh_routes();
        drop(change);
        if let Some(artifact) = unkept {
            artifact.keep().await;
        }
        self.metrics.deployed(name);
        tracing::info!(
            component = name,
            version,
            size,
            cached,
            canary_percent = canary.map(|plan| plan.percent),
            "deployed"
        );
        Ok(Some(Deployed { version, created, unchanged: false }))
    }

    /// Stop serving `name`: its routes answer 404 from now on. Its keyspace,
    /// history and stored versions are kept (a later deploy continues the
    /// version numbers, [`Deployments::activate`] serves one of them again)
    /// unless `purge`, which forgets the name, also one undeployed before,
    /// and drops its keyspace.
    pub async fn undeploy(&self, name: &str, purge: bool) -> Result<(), DeployError> {
        let _name = self.lock_name(name).await;
        let _change = self.changes.lock().await;
        // Purging may forget a name undeployed before; undeploying needs
        // one that serves.
        let mut record = match purge {
            true => self.record(name)?.ok_or_else(|| DeployError::Unknown(name.to_string()))?,
            false => self.active_record(name)?,
        };
        // The record first: refused (another host changed the name), this
        // host keeps serving what the record still says.
        if purge {
            self.forget(&record)?;
        } else {
            self.end_canary(&mut record, "rolled back", "the component was undeployed");
            record.active = None;
            self.save(&record)?;
        }
        self.registry.remove(name);
        self.refresh_routes();
        if purge {
            self.keyspaces.purge(name)?;
            self.runtime.forget(name);
            self.bus.forget_subscriber(name).map_err(|e| DeployError::Storage(e.to_string()))?;
        }
        self.keyspaces.flush().await?;
        tracing::info!(component = name, purge, "undeployed");
        Ok(())
    }

    /// A deployment of `version` of `name`, from the artifact cache (or
    /// compiled from the stored bytes if the cache entry is missing or bad).
    pub(super) async fn load(
        &self,
        name: &str,
        version: &VersionRecord,
    ) -> Result<Arc<Deployment>, DeployError> {
        self.blobs.fetch(&version.digest).await?;
        let blob = self.blobs.path(&version.digest);
        let keyspace = self.keyspace(name)?;
        let read = move || std::fs::read(blob);
        let mut prepared = self.runtime.prepare(name, &version.digest, read, &keyspace).await?;
        // A version that deployed before: its artifact was lost or bad.
        if let Some(artifact) = prepared.take_unkept() {
            artifact.keep().await;
        }
        Ok(self.runtime.deployment(
            name,
            version.version,
            version.digest.clone(),
            version.size as usize,
            prepared,
            keyspace,
        ))
    }

    fn keyspace(&self, name: &str) -> Result<Arc<dyn Keyspace>, DeployError> {
        Ok(self.keyspaces.open(name)?)
    }
}
