//! What keeps one failing or overloaded component from taking others down:
//! the circuit breaker, the bulkhead and the turns at the CPU of each
//! deployment, and faults injected on purpose to try them.

pub mod breaker;
pub mod bulkhead;
pub mod fault;
pub mod turns;
