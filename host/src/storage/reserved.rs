//! The platform's own keys in a keyspace, beside the guest's.
//!
//! Guest keys are UTF-8, and UTF-8 never holds the byte 0xFF: every key
//! starting with it is the platform's, so no guest can read, list or forge
//! one. The commit writes both kinds in one batch (the transactional
//! outbox), and the event queue reads them back.

/// Where a keyspace keeps events published but not yet relayed.
pub const OUTBOX_PREFIX: &[u8] = b"\xffoutbox\0";
/// Where a subscriber's keyspace marks the queue entries it has handled.
pub const HANDLED_PREFIX: &[u8] = b"\xffhandled\0";
/// Where a keyspace keeps the answers to requests sent with an
/// `Idempotency-Key` (`crate::runtime::idempotency`).
pub const IDEMPOTENCY_PREFIX: &[u8] = b"\xffidempotency\0";

/// The outbox key of event number `seq`.
pub fn outbox_key(seq: u64) -> Vec<u8> {
    let mut key = OUTBOX_PREFIX.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number of an outbox key.
pub fn outbox_seq(key: &[u8]) -> u64 {
    let bytes: [u8; 8] = key[OUTBOX_PREFIX.len().min(key.len())..].try_into().unwrap_or_default();
    u64::from_be_bytes(bytes)
}

/// The mark, in the subscriber's keyspace, that the entry at `queue_key` was handled.
pub fn handled_key(queue_key: &[u8]) -> Vec<u8> {
    let mut key = HANDLED_PREFIX.to_vec();
    key.extend_from_slice(queue_key);
    key
}

/// Whether `key` is one of the platform's own keys in a keyspace.
pub fn is_reserved_key(key: &[u8]) -> bool {
    key.first() == Some(&0xff)
}

/// Whether `key` counts against the keyspace's quota: the guest's keys, and
/// the answers kept for its clients' retries, which the tenant's clients
/// make as many of as they like.
pub fn is_charged_key(key: &[u8]) -> bool {
    !is_reserved_key(key) || key.starts_with(IDEMPOTENCY_PREFIX)
}
