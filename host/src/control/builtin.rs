//! The services pitstop ships with, compiled to wasm32-wasip2 by `build.rs`
//! and embedded in the binary, so `pitstop serve` needs no other file.

/// A component embedded in the binary.
pub struct Builtin {
    /// The name it is deployed under.
    pub name: &'static str,
    /// The route prefix it answers by default.
    pub prefix: &'static str,
    /// The component bytes.
    pub wasm: &'static [u8],
}

macro_rules! builtin {
    ($name:literal, $prefix:literal) => {
        Builtin {
            name: $name,
            prefix: $prefix,
            wasm: include_bytes!(concat!(env!("PITSTOP_BUILTIN_DIR"), "/", $name, ".wasm")),
        }
    };
}

/// user, order and payment with their default routes.
pub const BUILTINS: &[Builtin] =
    &[builtin!("user", "/users"), builtin!("order", "/orders"), builtin!("payment", "/payments")];
