//! Typed access to the component's own keyspace.
//!
//! The raw operations are re-exported from the WIT bindings; the `*_json`
//! helpers store values as JSON and turn storage failures into a 500
//! [`ApiError`] so handlers can use `?`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ApiError;
pub use crate::bindings::pitstop::platform::keyvalue::*;

/// A key the platform refuses (too long, ...) is the request's fault: keys
/// are almost always built from what the client sent (an id in the path, a
/// query parameter), so it answers 400, and a client sending garbage cannot
/// make the component look broken (5xx answers count against its circuit
/// breaker, for every client). A quota refusal answers 507 Insufficient
/// Storage: the keyspace (or what one request may write) is full, the
/// component is not broken, and the platform's breaker does not count 507,
/// so clients filling a keyspace cannot switch its reads off. Storage
/// failures stay 500.
impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidKey(m) => ApiError::bad_request(format!("invalid key: {m}")),
            Error::QuotaExceeded(m) => ApiError::new(507, format!("storage quota exceeded: {m}")),
            Error::Storage(m) => ApiError::internal(format!("storage failed: {m}")),
        }
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
