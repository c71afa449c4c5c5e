//! What keeps one failing or overloaded component from taking others down:
//! the circuit breaker, the bulkhead and the turns at the CPU of each
//! deployment, the host memory and outgoing connections of each component, and faults injected on purpose to try them.

pub mod breaker;
pub mod bulkhead;
pub mod connections;
pub mod fault;
pub mod memory;
pub mod turns;
