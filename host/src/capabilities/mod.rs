//! What a guest can call: one module per interface of the
//! `pitstop:platform/service` world. Each context lives in the store's data
//! for one invocation, and each `add_to_linker` is generic over that data
//! (given a getter), as wasmtime's own capability crates are; nothing here
//! knows the runtime that assembles them.

pub mod bus;
pub mod http;
pub mod keyvalue;
pub mod log;
pub mod poll;
pub mod services;
pub mod wasi_keyvalue;
