//! The one `generate!` of the guest side. Nothing else lives here.
#![allow(missing_docs, unsafe_code)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "event-service",
    pub_export_macro: true,
    default_bindings_module: "pitstop_sdk::bindings",
    generate_all,
});
