//! Typed access to the component's own keyspace.
//!
//! The raw operations are re-exported from the WIT bindings; the `*_json`
//! helpers store values as JSON and turn storage failures into a 500
//! [`ApiError`] so handlers can use `?`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ApiError;
pub use crate::bindings::pitstop::platform::keyvalue::*;

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let message = match error {
            Error::InvalidKey(m) => format!("invalid key: {m}"),
            Error::QuotaExceeded(m) => format!("storage quota exceeded: {m}"),
            Error::Storage(m) => format!("storage failed: {m}"),
        };
        ApiError::internal(message)
    }
}

/// The JSON value stored under `key`, if any.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, ApiError> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ApiError::internal(format!("stored record {key:?} is corrupt: {e}"))),
    }
}

/// Store `value` as JSON under `key`.
pub fn put_json<T: Serialize>(key: &str, value: &T) -> Result<(), ApiError> {
    set(key, &to_json(value))?;
    Ok(())
}

/// `value` as the JSON bytes `put_json` would store, for `compare-and-swap`.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialising a value to JSON cannot fail")
}

/// Every key starting with `prefix`, in order, page by page.
pub fn all_keys(prefix: &str) -> Result<Vec<String>, ApiError> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = list_keys(prefix, cursor.as_deref(), 1000)?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}
