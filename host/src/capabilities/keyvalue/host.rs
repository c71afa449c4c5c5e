//! The `keyvalue` host functions a guest calls, over the invocation's
//! [`KeyvalueCtx`]: reads see the committed state overlaid with the
//! invocation's own writes, and writes are buffered until the commit.

use std::ops::Bound;

use super::{KeyvalueCtx, MAX_PAGE, PendingWrite, add, check_key, check_value, counter};
use crate::bindings::keyvalue::{self, Error, KeyPage};
use crate::storage::reserved::is_reserved_key;

impl keyvalue::Host for KeyvalueCtx {
    #[tracing::instrument(level = "debug", name = "keyvalue.get", skip_all)]
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.metrics.kv_get.inc();
        check_key(&key)?;
        let value = self.read(&key)?;
        let read = key.len() + value.as_ref().map_or(0, Vec::len);
        // Held until the value is handed to wasmtime, which copies it into
        // the guest: refused, the value is dropped at once.
        let _charge = self.charge("a value read", read as u64)?;
        self.metrics.kv_bytes_read.inc_by(read as u64);
        Ok(value)
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.set", skip_all)]
    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.metrics.kv_set.inc();
        check_key(&key)?;
        check_value(&value)?;
        self.metrics.kv_bytes_written.inc_by((key.len() + value.len()) as u64);
        self.buffer(&key, PendingWrite::Put(value))
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.delete", skip_all)]
    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        self.metrics.kv_delete.inc();
        check_key(&key)?;
        let existed = self.read(&key)?.is_some();
        if existed {
            self.buffer(&key, PendingWrite::Delete)?;
        }
        Ok(existed)
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.exists", skip_all)]
    async fn exists(&mut self, key: String) -> Result<bool, Error> {
        self.metrics.kv_get.inc();
        check_key(&key)?;
        Ok(self.read(&key)?.is_some())
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.list-keys", skip_all)]
    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, Error> {
        self.metrics.kv_list.inc();
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let start = match &cursor {
            // A cursor outside the prefix would list someone else's range of
            // this keyspace; start at the prefix instead.
            Some(c) if c.starts_with(&prefix) => Bound::Excluded(c.clone()),
            _ => Bound::Included(prefix.clone()),
        };
        let mut committed = self
            .committed_state()?
            .range_from(start.as_ref().map(|k| k.as_bytes()))
            .map(|entry| entry.map(|(key, _)| key))
            // The platform's own keys (the outbox) sort after every UTF-8 key.
            .take_while(|entry| {
                entry
                    .as_ref()
                    .map_or(true, |k| k.starts_with(prefix.as_bytes()) && !is_reserved_key(k))
            })
            .peekable();
        let mut own = self
            .writes
            .pending
            .range::<String, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .peekable();
        // Merge the committed keys with this invocation's writes, in byte
        // order; where both have a key, the invocation's write decides.
        let mut keys = Vec::with_capacity(limit.min(64));
        let mut more = false;
        loop {
            let next_committed = match committed.peek() {
                Some(Ok(k)) => Some(k.to_vec()),
                Some(Err(_)) => return Err(self.failed(committed.next().unwrap().unwrap_err())),
                None => None,
            };
            let next_own = own.peek().map(|(k, w)| (k.as_bytes().to_vec(), (*w).clone()));
            let (key, present) = match (next_committed, next_own) {
                (None, None) => break,
                (Some(c), None) => {
                    committed.next();
                    (c, true)
                }
                (Some(c), Some((o, write))) if o <= c => {
                    own.next();
                    if o == c {
                        committed.next();
                    }
                    (o, !matches!(write, PendingWrite::Delete))
                }
                (Some(c), Some(_)) => {
                    committed.next();
                    (c, true)
                }
                (None, Some((o, write))) => {
                    own.next();
                    (o, !matches!(write, PendingWrite::Delete))
                }
            };
            if !present {
                continue;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(String::from_utf8_lossy(&key).into_owned());
        }
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.increment", skip_all)]
    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        self.metrics.kv_add.inc();
        check_key(&key)?;
        self.lock_counter(&key).await?;
        match self.writes.pending.get(&key) {
            // The invocation set or deleted the key itself: count from that.
            Some(PendingWrite::Put(_) | PendingWrite::Delete) => {
                let next = add(counter(self.read(&key)?.as_deref())?, delta)?;
                self.buffer(&key, PendingWrite::Put(next.to_string().into_bytes()))?;
                Ok(next)
            }
            // Otherwise keep a delta, applied to whatever value is committed
            // when this invocation commits.
            Some(PendingWrite::Add(earlier)) => {
                let total = add(*earlier, delta)?;
                let next = add(counter(self.committed(&key)?.as_deref())?, total)?;
                self.buffer_counter(&key, total, next)?;
                Ok(next)
            }
            // The value returned is counted from the committed one: the
            // commit checks it is still that (see `counters`).
            None => {
                let base = self.committed(&key)?;
                let next = add(counter(base.as_deref())?, delta)?;
                self.buffer_counter(&key, delta, next)?;
                self.writes.expectations.entry(key).or_insert(base);
                Ok(next)
            }
        }
    }

    #[tracing::instrument(level = "debug", name = "keyvalue.compare-and-swap", skip_all)]
    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, Error> {
        self.metrics.kv_set.inc();
        check_key(&key)?;
        if let Some(value) = &new {
            check_value(value)?;
        }
        if self.read(&key)? != expected {
            return Ok(false);
        }
        match self.writes.pending.get(&key) {
            // The swap depends on the committed value: the commit checks it
            // is still the same, so of two concurrent swaps only one lands.
            None => {
                self.writes.expectations.entry(key.clone()).or_insert(expected);
            }
            Some(PendingWrite::Add(_)) => {
                let base = self.committed(&key)?;
                self.writes.expectations.entry(key.clone()).or_insert(base);
            }
            Some(PendingWrite::Put(_) | PendingWrite::Delete) => {}
        }
        let write = match new {
            Some(value) => PendingWrite::Put(value),
            None => PendingWrite::Delete,
        };
        self.buffer(&key, write)?;
        Ok(true)
    }
}
