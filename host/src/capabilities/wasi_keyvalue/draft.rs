//! `wasi:keyvalue@0.2.0-draft`: the release wasmtime's own crate and
//! wasmCloud implement. Its `list-keys` cursor is a count of keys already
//! returned, and `increment` is unsigned.
#![allow(missing_docs)]

use wasmtime::component::Resource;

use super::{Bucket, WasiKeyvalue, describe, is_default_bucket};
use crate::bindings::keyvalue::Host as _;
use crate::capabilities::keyvalue::{MAX_PAGE, parse_counter};

wasmtime::component::bindgen!({
    path: "../wit/deps/keyvalue-0.2.0-draft",
    world: "wasi:keyvalue/imports",
    imports: { default: async },
    with: { "wasi:keyvalue/store.bucket": crate::capabilities::wasi_keyvalue::Bucket },
});

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
        cursor: Option<u64>,
    ) -> Result<KeyResponse, Error> {
        // Skip the keys already returned, a page at a time: the cursor
        // stays valid across invocations, at the cost of reading them again.
        let returned = cursor.unwrap_or(0);
        let mut skip = returned;
        let mut after = None;
        loop {
            let page = self.kv.list_keys(String::new(), after, MAX_PAGE).await.map_err(other)?;
            let count = page.keys.len() as u64;
            if skip >= count && page.cursor.is_some() {
                skip -= count;
                after = page.cursor;
                continue;
            }
            let keys: Vec<String> = page.keys.into_iter().skip(skip as usize).collect();
            let cursor = page.cursor.map(|_| returned + keys.len() as u64);
            return Ok(KeyResponse { keys, cursor });
        }
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
        delta: u64,
    ) -> Result<u64, Error> {
        let delta = i64::try_from(delta)
            .map_err(|_| Error::Other(format!("delta {delta} is over {}", i64::MAX)))?;
        // The value is unsigned here: refuse a negative one before adding,
        // so that nothing is written when the answer cannot be given.
        if let Some(bytes) = self.kv.get(key.clone()).await.map_err(other)? {
            let value = parse_counter(&bytes).map_err(other)?;
            if value < 0 {
                return Err(Error::Other(format!("the value under {key:?} is negative")));
            }
        }
        let next = self.kv.increment(key, delta).await.map_err(other)?;
        Ok(next as u64)
    }
}

impl batch::Host for WasiKeyvalue<'_> {
    async fn get_many(
        &mut self,
        _: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, Error> {
        let found = self.get_all(keys).await.map_err(other)?;
        Ok(found.into_iter().map(|(key, value)| value.map(|value| (key, value))).collect())
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
