//! Where the bytes of every deployed version are kept: `components/<sha256>.wasm`
//! under the data dir and, on a cluster, the shared object store too, so a
//! host that follows a deploy made elsewhere (or starts later) finds them.

use std::path::PathBuf;
use std::sync::Arc;

use crate::runtime::DeployError;
use crate::runtime::artifacts::{hex_sha256, write_atomically};
use crate::storage::jetstream::JetStreamStore;

/// The bytes of deployed versions, by digest.
pub(super) struct Blobs {
    dir: PathBuf,
    cluster: Option<Arc<JetStreamStore>>,
}

impl Blobs {
    /// Bytes in `dir`, shared through `cluster` when given.
    pub(super) fn new(dir: PathBuf, cluster: Option<Arc<JetStreamStore>>) -> Self {
        Blobs { dir, cluster }
    }

    /// Where this host keeps the bytes of `digest`.
    pub(super) fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.wasm"))
    }

    /// Keep `bytes` (whose digest is `digest`) on this host.
    pub(super) fn keep(&self, digest: &str, bytes: &[u8]) -> Result<(), DeployError> {
        let path = self.path(digest);
        if !path.exists() {
            if let Some(why) = crate::storage::disk::refusal() {
                return Err(DeployError::Keyspace(crate::storage::StorageError::NoSpace(why)));
            }
            write_atomically(&path, bytes).map_err(|e| DeployError::Storage(e.to_string()))?;
        }
        Ok(())
    }

    /// On a cluster, put `bytes` where every host finds them.
    pub(super) async fn share(&self, digest: &str, bytes: &[u8]) -> Result<(), DeployError> {
        if let Some(cluster) = &self.cluster {
            cluster.put_blob(digest, bytes).await?;
        }
        Ok(())
    }

    /// Make sure this host has the bytes of `digest`, fetching them from
    /// the cluster when it has not (checked against the digest).
    pub(super) async fn fetch(&self, digest: &str) -> Result<(), DeployError> {
        let path = self.path(digest);
        let Some(cluster) = &self.cluster else { return Ok(()) };
        if path.exists() {
            return Ok(());
        }
        let bytes = cluster.get_blob(digest).await?;
        if hex_sha256(&bytes) != digest {
            return Err(DeployError::Storage(format!(
                "the cluster's bytes of {digest} do not match their digest"
            )));
        }
        write_atomically(&path, &bytes).map_err(|e| DeployError::Storage(e.to_string()))
    }
}
