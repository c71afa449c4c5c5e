//! Testing components inside the platform: the harness that drives a whole
//! platform in-process (for Rust tests of services), and the runner of a
//! component's own wasm-level tests.

pub mod harness;
pub mod runner;
pub mod stubs;
pub mod suite;
