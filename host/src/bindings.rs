//! The one `bindgen!` of the host side, generated from `wit/`. Nothing else lives here.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "service",
    imports: { default: async },
    exports: { default: async },
});

pub use exports::pitstop::platform::handler;
pub use pitstop::platform::{keyvalue, log, services, types};
