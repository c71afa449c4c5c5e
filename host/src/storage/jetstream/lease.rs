//! Work one host of the cluster does at a time (dispatching events): a
//! lease in a JetStream key-value bucket, held by renewing it.
//!
//! The bucket keeps each key for [`LEASE_TTL`] after its last write. A host
//! takes the lease by creating the key (refused while another host's is
//! alive), and keeps it by updating it at the revision it last wrote,
//! every third of the TTL; the first renewal that fails ends its hold, well
//! before the key expires and another host can take it.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;

use super::JetStreamStore;
use crate::storage::StorageError;

/// How long a lease outlives its holder's last renewal: the longest the
/// cluster goes without a dispatcher after the holder dies.
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// The bucket all leases live in.
const BUCKET: &str = "pitstop_leases";

/// One named lease, as this host sees it.
pub struct Lease {
    store: kv::Store,
    name: String,
    holder: Bytes,
}

impl Lease {
    /// Wait until this host holds the lease; returns the revision it wrote.
    pub async fn acquire(&self) -> u64 {
        loop {
            match self.store.create(&self.name, self.holder.clone()).await {
                Ok(revision) => return revision,
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(error) => {
                    tracing::debug!(lease = %self.name, %error, "cannot take the lease yet");
                }
            }
            tokio::time::sleep(LEASE_TTL / 3).await;
        }
    }

    /// Renew the lease taken at `revision` until a renewal fails; returns
    /// then, when this host must stop doing the lease's work.
    pub async fn hold(&self, mut revision: u64) {
        loop {
            tokio::time::sleep(LEASE_TTL / 3).await;
            let renewal = self.store.update(&self.name, self.holder.clone(), revision);
            match tokio::time::timeout(LEASE_TTL / 3, renewal).await {
                Ok(Ok(next)) => revision = next,
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.name, %error, "lost the lease");
                    return;
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "could not renew the lease in time; giving it up");
                    return;
                }
            }
        }
    }
}

impl JetStreamStore {
    /// The lease called `name`, held in this host's name `holder`.
    pub async fn lease(&self, name: &str, holder: &str) -> Result<Lease, StorageError> {
        let config = kv::Config {
            bucket: BUCKET.to_string(),
            history: 1,
            max_age: LEASE_TTL,
            num_replicas: self.replicas,
            ..Default::default()
        };
        let store = self
            .link
            .context
            .create_or_update_key_value(config)
            .await
            .map_err(|e| StorageError::Backend(Box::new(e)))?;
        Ok(Lease { store, name: name.to_string(), holder: Bytes::from(holder.to_string()) })
    }
}
