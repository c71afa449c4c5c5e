//! `wasi:keyvalue@0.2.0-draft2`, the version Spin ships: string cursors
//! (the last key returned), signed `increment`, `cas` handles, and
//! `get-many` answering every key asked.
#![allow(missing_docs)]

use wasmtime::component::Resource;

use super::{Bucket, Cas, WasiKeyvalue, describe, is_default_bucket};
use crate::bindings::keyvalue::Host as _;
use crate::capabilities::keyvalue::MAX_PAGE;

wasmtime::component::bindgen!({
    path: "../wit/deps/keyvalue-0.2.0-draft2",
    world: "wasi:keyvalue/imports",
    imports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": crate::capabilities::wasi_keyvalue::Bucket,
        "wasi:keyvalue/atomics.cas": crate::capabilities::wasi_keyvalue::Cas,
    },
});

use atomics::CasError;
use store::{Error, KeyResponse};
use wasi::keyvalue::{atomics, batch, store};

fn other(error: crate::bindings::keyvalue::Error) -> Error {
    Error::Other(describe(error))
}

impl store::Host for WasiKeyvalue<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, Error> {
        match is_default_bucket(&identifier) {
            true => Ok(Resource::new_own(0)),
            false => Err(Error::NoSuchStore),
        }
    }
}

impl store::HostBucket for WasiKeyvalue<'_> {
    async fn get(&mut self, _: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.kv.get(key).await.map_err(other)
    }

    async fn set(&mut self, _: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.kv.set(key, value).await.map_err(other)
    }

    async fn delete(&mut self, _: Resource<Bucket>, key: String) -> Result<(), Error> {
        self.kv.delete(key).await.map(drop).map_err(other)
    }

    async fn exists(&mut self, _: Resource<Bucket>, key: String) -> Result<bool, Error> {
        self.kv.exists(key).await.map_err(other)
    }

    async fn list_keys(
        &mut self,
        _: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<KeyResponse, Error> {
        let page = self.kv.list_keys(String::new(), cursor, MAX_PAGE).await.map_err(other)?;
        Ok(KeyResponse { keys: page.keys, cursor: page.cursor })
    }

    async fn drop(&mut self, _: Resource<Bucket>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl atomics::Host for WasiKeyvalue<'_> {
    async fn increment(
        &mut self,
        _: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<i64, Error> {
        self.kv.increment(key, delta).await.map_err(other)
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Result<(), CasError> {
        let rep = cas.rep();
        let Ok(entry) = self.cas.take(rep) else {
            return Err(CasError::StoreError(Error::Other(format!("unknown cas handle {rep}"))));
        };
        let swapped = self.kv.compare_and_swap(entry.key.clone(), entry.seen, Some(value)).await;
        match swapped {
            Ok(true) => Ok(()),
            // Hand the handle back holding the value now, to try again.
            Ok(false) => {
                let seen = self.kv.get(entry.key.clone()).await;
                let seen = seen.map_err(|e| CasError::StoreError(other(e)))?;
                let rep = self.new_cas(entry.key, seen);
                let rep = rep.map_err(|e| CasError::StoreError(other(e)))?;
                Err(CasError::CasFailed(Resource::new_own(rep)))
            }
            Err(error) => Err(CasError::StoreError(other(error))),
        }
    }
}

impl atomics::HostCas for WasiKeyvalue<'_> {
    async fn new(&mut self, _: Resource<Bucket>, key: String) -> Result<Resource<Cas>, Error> {
        let seen = self.kv.get(key.clone()).await.map_err(other)?;
        let rep = self.new_cas(key, seen).map_err(other)?;
        Ok(Resource::new_own(rep))
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, Error> {
        let entry = self.cas.get(cas.rep()).map_err(|e| Error::Other(e.to_string()))?;
        Ok(entry.seen.clone())
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.cas.take(cas.rep()).map(drop)
    }
}

impl batch::Host for WasiKeyvalue<'_> {
    async fn get_many(
        &mut self,
        _: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, Error> {
        self.get_all(keys).await.map_err(other)
    }

    async fn set_many(
        &mut self,
        _: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Error> {
        self.set_all(key_values).await.map_err(other)
    }

    async fn delete_many(&mut self, _: Resource<Bucket>, keys: Vec<String>) -> Result<(), Error> {
        self.delete_all(keys).await.map_err(other)
    }
}
