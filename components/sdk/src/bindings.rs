//! The one `generate!` of the guest side. Nothing else lives here.
//!
//! The WIT is `wit/platform.wit`, beside this crate (a link to the
//! repository's `wit/` here, a copy in a crate `pitstop new` made).
//!
//! With the `testing` feature (a component's dev-dependency, so only its
//! test builds have it) the world is `test-service`, which adds the
//! `testing` import that `pitstop test-runner` provides.
#![allow(missing_docs, unsafe_code)]

#[cfg(not(feature = "testing"))]
wit_bindgen::generate!({
    path: "wit",
    world: "event-service",
    pub_export_macro: true,
    default_bindings_module: "pitstop_sdk::bindings",
    generate_all,
});

#[cfg(feature = "testing")]
wit_bindgen::generate!({
    path: "wit",
    world: "test-service",
    pub_export_macro: true,
    default_bindings_module: "pitstop_sdk::bindings",
    generate_all,
});
