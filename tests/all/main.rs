//! pitstop's integration tests: the real `pitstop` binary, the real compiled
//! components, real HTTP on 127.0.0.1 with an ephemeral port.

mod async_abi;
mod auth;
mod breaker;
mod canary;
mod cli;
mod cluster;
mod console;
mod deploy;
mod disk;
mod event_payloads;
mod events;
mod examples;
mod gateway;
mod harness;
mod host_memory;
mod idempotency;
mod isolation;
mod keyvalue;
mod observability;
mod order_versions;
mod orders;
mod outbound;
mod ownership;
mod payments;
mod persistence;
mod resilience;
mod reuse;
mod saga;
mod scaffold;
mod support;
mod upstream;
mod users;
mod wasi_http;
mod wasi_keyvalue;
mod wasm_tests;
