//! `Idempotency-Key`: a client's retried write gets the first answer again
//! instead of running the component a second time.
//!
//! The first request with a key claims it with a *lease* record, written
//! before the guest runs; a request with the same key meanwhile finds it
//! and gets 409 (retry later). The answer is kept by the same commit as the
//! invocation's writes and events, so a retry sees the first answer exactly
//! when the first request's writes are there. An invocation that commits
//! nothing and did nothing outside itself gives the key up: a retry runs
//! afresh. One that called a service or sent a request (a charge elsewhere)
//! keeps whatever it answered, a failure included: running it again could
//! do those twice.
//!
//! Records live in the component's own keyspace under a reserved prefix,
//! one per (verified subject, key), and count against its quota until they
//! expire (`idempotency_ttl_s`); [`sweep`] removes them then. The record is
//! per component, so "route" in the contract means the component a route
//! leads to; its fingerprint (method, path, query, body) must match, or the
//! reuse is refused with 422.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pitstop_gateway::auth::{AUTH_HEADER, SUBJECT_HEADER};
use sha2::{Digest, Sha256};

use bytes::Bytes;

use crate::bindings::types::{Header, Response};
use crate::capabilities::services::header;
use crate::events::queue::now_ms;
use crate::runtime::registry::Deployment;
use crate::storage::reserved::IDEMPOTENCY_PREFIX;
use crate::storage::{Batch, StorageError};

mod record;
mod serve;

use record::Record;

/// The request header a client names its write with.
pub const HEADER: &str = "idempotency-key";
/// Set on an answer replayed from a kept one.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Set by the platform on a keyed request it runs: a digest of the caller
/// and its key, the same for every retry and different for every other
/// caller or key, from which a service may derive the ids it creates (so a
/// retry the platform runs again, after a crash lost the kept answer,
/// finds what the first run made).
pub use crate::capabilities::services::SCOPE_HEADER;
/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// How long past its deadline a lease keeps other requests with the key
/// waiting: a host that died mid-request frees the key after this.
pub(super) const LEASE_GRACE: Duration = Duration::from_secs(5);

/// What a request carrying a key may do.
pub enum Claim {
    /// It carries none, or is not a write: run it as usual.
    Unkeyed,
    /// Run it, and keep its answer with [`Keep`].
    Run(Keep),
    /// Answer this without running the component: a kept answer, or why
    /// the key cannot be used.
    Answer(Response),
}

/// The key a running request holds.
pub struct Keep {
    key: Vec<u8>,
    fingerprint: [u8; 32],
    /// The lease as written; the commit keeping the answer expects it.
    lease: Vec<u8>,
    ttl: Duration,
    made_calls: AtomicBool,
    kept: AtomicBool,
}

/// The kept answer an invocation's commit writes in place of its lease.
pub struct KeptAnswer {
    /// Where.
    pub key: Vec<u8>,
    /// The record.
    pub value: Vec<u8>,
    /// What the key must still hold: the lease.
    pub lease: Vec<u8>,
}

/// Claim `request`'s key in `deployment`'s keyspace, if it carries one and
/// is a write: a kept answer for `ttl`, a lease until `lease_for` from now
/// (its deadline, plus a grace).
pub fn claim(
    deployment: &Deployment,
    request: &http::Request<Bytes>,
    ttl: Duration,
    lease_for: Duration,
) -> Result<Claim, StorageError> {
    let Some(given) = header(request, HEADER) else { return Ok(Claim::Unkeyed) };
    if !["POST", "PUT", "PATCH", "DELETE"].contains(&request.method().as_str()) {
        return Ok(Claim::Unkeyed);
    }
    if given.is_empty() || given.len() > MAX_KEY_LEN || !given.bytes().all(|b| b.is_ascii_graphic())
    {
        return Ok(Claim::Answer(error(
            400,
            &format!("an {HEADER} is 1 to {MAX_KEY_LEN} visible ASCII characters"),
        )));
    }
    // Anonymous clients could not be told apart: one could replay
    // another's answer by guessing its key.
    let Some(subject) = header(request, SUBJECT_HEADER) else {
        return Ok(Claim::Answer(error(
            400,
            &format!("an {HEADER} needs a verified caller (a token or an API key) on this route"),
        )));
    };
    // Length-prefixed parts; a JWT's `sub` and an API key's name may be
    // the same string, and the method keeps them apart.
    let method = header(request, AUTH_HEADER).unwrap_or_default();
    let mut scope = Sha256::new();
    for part in [method, subject, given] {
        scope.update((part.len() as u64).to_be_bytes());
        scope.update(part.as_bytes());
    }
    let key = [IDEMPOTENCY_PREFIX, &scope.finalize()[..]].concat();
    let fingerprint = fingerprint(request);
    let now = now_ms();
    let lease =
        Record::Lease { fingerprint, until_ms: now + lease_for.as_millis() as u64 }.encode();

    let keyspace = &*deployment.keyspace;
    let _commit = deployment.usage.commit_lock();
    let mut decided = None;
    let mut replaced = 0;
    let mut prepare = || {
        let current = match keyspace.get(&key) {
            Ok(current) => current,
            Err(error) => {
                decided = Some(Err(error));
                return None;
            }
        };
        let record = current.as_deref().and_then(Record::decode).filter(|r| r.ends_ms() > now);
        decided = Some(Ok(match record {
            Some(record) if record.fingerprint() != &fingerprint => Some(error(
                422,
                &format!(
                    "this {HEADER} was used for a different request (method, path, query or \
                     body); use a new key for a new request"
                ),
            )),
            Some(Record::Lease { until_ms, .. }) => {
                let mut busy = error(
                    409,
                    &format!("a request with this {HEADER} is still running; retry later"),
                );
                let seconds = until_ms.saturating_sub(now).div_ceil(1000).max(1);
                busy.headers
                    .push(Header { name: "retry-after".into(), value: seconds.to_string() });
                Some(busy)
            }
            Some(Record::Kept { mut response, .. }) => {
                response
                    .headers
                    .push(Header { name: REPLAYED_HEADER.into(), value: "true".into() });
                Some(response)
            }
            None => None,
        }));
        if !matches!(decided, Some(Ok(None))) {
            return None;
        }
        replaced = current.map_or(0, |old| (key.len() + old.len()) as u64);
        let mut batch = Batch::default();
        batch.insert(key.clone(), lease.clone());
        Some(batch)
    };
    let applied = keyspace.transact(&mut prepare)?;
    match decided {
        Some(Err(error)) => Err(error),
        Some(Ok(Some(answer))) => Ok(Claim::Answer(answer)),
        Some(Ok(None)) if applied => {
            deployment.usage.record(replaced, (key.len() + lease.len()) as u64);
            let (made_calls, kept) = (AtomicBool::new(false), AtomicBool::new(false));
            Ok(Claim::Run(Keep { key, fingerprint, lease, ttl, made_calls, kept }))
        }
        _ => Err(StorageError::Busy),
    }
}

impl Keep {
    /// The digest naming the caller and its key, lower-case hex
    /// ([`SCOPE_HEADER`]).
    pub fn scope(&self) -> String {
        self.key[IDEMPOTENCY_PREFIX.len()..].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The record keeping `response`, for the invocation's commit.
    pub fn kept_answer(&self, response: &Response) -> KeptAnswer {
        let expires_ms = now_ms() + self.ttl.as_millis() as u64;
        let record =
            Record::Kept { fingerprint: self.fingerprint, expires_ms, response: response.clone() };
        KeptAnswer { key: self.key.clone(), value: record.encode(), lease: self.lease.clone() }
    }

    /// The invocation did something outside itself (see [`Keep`]).
    pub fn note_calls(&self, made: bool) {
        if made {
            self.made_calls.store(true, Ordering::SeqCst);
        }
    }

    /// Its commit kept the answer.
    pub fn mark_kept(&self) {
        self.kept.store(true, Ordering::SeqCst);
    }

    /// After the invocation: keep `answer` on its own if the commit did not
    /// and the invocation did something outside itself, else give the key
    /// up. Whether something was written (and must be flushed).
    pub fn settle(&self, deployment: &Deployment, answer: &Response) -> Result<bool, StorageError> {
        if self.kept.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let keep = self.made_calls.load(Ordering::SeqCst);
        let kept = self.kept_answer(answer);
        let keyspace = &*deployment.keyspace;
        let _commit = deployment.usage.commit_lock();
        let mut sizes = (0, 0);
        let mut prepare = || {
            // Only while the lease is still ours.
            if keyspace.get(&self.key).ok()?.as_deref() != Some(&self.lease[..]) {
                return None;
            }
            let mut batch = Batch::default();
            let held = (self.key.len() + self.lease.len()) as u64;
            if keep {
                batch.insert(self.key.clone(), kept.value.clone());
                sizes = (held, (self.key.len() + kept.value.len()) as u64);
            } else {
                batch.remove(self.key.clone());
                sizes = (held, 0);
            }
            Some(batch)
        };
        let written = keyspace.transact(&mut prepare)?;
        if written {
            deployment.usage.record(sizes.0, sizes.1);
        }
        Ok(written && keep)
    }
}

/// Remove the records of `deployment`'s keyspace that ended before `now`
/// (milliseconds since the Unix epoch); how many.
pub fn sweep(deployment: &Deployment, now: u64) -> Result<usize, StorageError> {
    let keyspace = &*deployment.keyspace;
    let ended: Vec<Vec<u8>> = keyspace
        .scan_prefix(IDEMPOTENCY_PREFIX)
        .filter_map(Result::ok)
        .filter(|(_, value)| Record::decode(value).is_none_or(|record| record.ends_ms() <= now))
        .map(|(key, _)| key)
        .collect();
    if ended.is_empty() {
        return Ok(0);
    }
    let _commit = deployment.usage.commit_lock();
    let (mut freed, mut removed) = (0, 0);
    let mut prepare = || {
        let mut batch = Batch::default();
        (freed, removed) = (0, 0);
        for key in &ended {
            // Read again under the lock: a request may have claimed it anew.
            let Ok(Some(value)) = keyspace.get(key) else { continue };
            if Record::decode(&value).is_none_or(|record| record.ends_ms() <= now) {
                freed += (key.len() + value.len()) as u64;
                removed += 1;
                batch.remove(key.clone());
            }
        }
        Some(batch)
    };
    if keyspace.transact(&mut prepare)? {
        deployment.usage.record(freed, 0);
    }
    Ok(removed)
}

/// What a retry must repeat: method, path, query and body.
fn fingerprint(request: &http::Request<Bytes>) -> [u8; 32] {
    let mut digest = Sha256::new();
    let (uri, query) = (request.uri(), request.uri().query().unwrap_or_default());
    for part in [request.method().as_str(), uri.path(), query] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    digest.update(request.body());
    digest.finalize().into()
}

/// A JSON error answer.
pub(super) fn error(status: u16, message: &str) -> Response {
    Response {
        status,
        headers: vec![Header { name: "content-type".into(), value: "application/json".into() }],
        body: serde_json::to_vec(&serde_json::json!({ "error": message }))
            .expect("a JSON value serialises"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_tells_requests_apart() {
        let request = |method: &str, path: &str, query: &str, body: &[u8]| {
            let target =
                if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
            let request = http::Request::builder().method(method).uri(target);
            request.body(Bytes::copy_from_slice(body)).unwrap()
        };
        let base = fingerprint(&request("POST", "/orders", "", b"{}"));
        assert_eq!(base, fingerprint(&request("POST", "/orders", "", b"{}")));
        assert_ne!(base, fingerprint(&request("PUT", "/orders", "", b"{}")));
        assert_ne!(base, fingerprint(&request("POST", "/orders/x", "", b"{}")));
        assert_ne!(base, fingerprint(&request("POST", "/orders", "a=1", b"{}")));
        assert_ne!(base, fingerprint(&request("POST", "/orders", "", b"{ }")));
        // Lengths are part of it: moving bytes between parts changes it.
        assert_ne!(
            fingerprint(&request("POST", "/a", "b", b"")),
            fingerprint(&request("POST", "/ab", "", b""))
        );
    }
}
