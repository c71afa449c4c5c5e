//! The one `bindgen!` of the host side, generated from `wit/`. Nothing else lives here.
//!
//! It is generated for `test-service`, the largest world (`event-service`
//! plus the `testing` import that only `pitstop test-runner` links).
//! Components built against plain `service` export only the handler, so
//! exports are looked up one interface at a time (`GuestIndices`) rather
//! than as a whole world.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "test-service",
    imports: { default: async },
    exports: { default: async },
});

pub use exports::pitstop::platform::{events, handler};
pub use pitstop::platform::{bus, keyvalue, log, services, testing, types};
