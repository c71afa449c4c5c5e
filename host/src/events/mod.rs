//! Events after they are committed: the durable queue (outbox relay, one
//! lane per subscriber and topic, retries, dead letters) and the dispatcher
//! that delivers from it. Publishing itself is the `bus` capability
//! ([`crate::capabilities::bus`]); the commit that writes the outbox is the
//! runtime's ([`crate::runtime::commit`]).

pub mod dispatch;
pub mod queue;
