//! Component bytes shared by a cluster: the JetStream object store bucket
//! `pitstop_components`, one object per sha256 digest. A deploy puts the
//! bytes there before it saves the record that names them, so every host
//! that reads the record finds them.

use std::time::Duration;

use async_nats::jetstream::object_store::{self, ObjectStore};
use tokio::io::AsyncReadExt;

use super::JetStreamStore;
use crate::storage::StorageError;

/// The bucket.
const BUCKET: &str = "pitstop_components";

/// How long moving one component's bytes may take (uploads reach 50 MiB).
const TRANSFER: Duration = Duration::from_secs(120);

impl JetStreamStore {
    async fn components(&self) -> Result<ObjectStore, StorageError> {
        let context = &self.link.context;
        if let Ok(store) = context.get_object_store(BUCKET).await {
            return Ok(store);
        }
        let config = object_store::Config {
            bucket: BUCKET.to_string(),
            num_replicas: self.replicas,
            ..Default::default()
        };
        match context.create_object_store(config).await {
            Ok(store) => Ok(store),
            // Another host made it first.
            Err(_) => context.get_object_store(BUCKET).await.map_err(unavailable),
        }
    }

    /// Keep `bytes` under `digest` for the cluster.
    pub async fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let put = async {
            let store = self.components().await?;
            if store.info(digest).await.is_ok() {
                return Ok(());
            }
            store.put(digest, &mut &bytes[..]).await.map_err(unavailable)?;
            Ok(())
        };
        tokio::time::timeout(TRANSFER, put).await.unwrap_or_else(|_| Err(timed_out()))
    }

    /// The bytes kept under `digest`.
    pub async fn get_blob(&self, digest: &str) -> Result<Vec<u8>, StorageError> {
        let get = async {
            let mut object = self.components().await?.get(digest).await.map_err(unavailable)?;
            let mut bytes = Vec::new();
            object.read_to_end(&mut bytes).await.map_err(unavailable)?;
            Ok(bytes)
        };
        tokio::time::timeout(TRANSFER, get).await.unwrap_or_else(|_| Err(timed_out()))
    }
}

fn unavailable(error: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(format!("component bytes: {error}"))
}

fn timed_out() -> StorageError {
    StorageError::Unavailable(format!("component bytes: no answer within {TRANSFER:?}"))
}
