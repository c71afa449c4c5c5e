// Shared by host/build.rs and the integration tests (through `include!`):
// both run cargo on a guest workspace from inside a cargo build or test.

/// A `cargo` command for a guest workspace. The outer build's settings
/// (clippy's wrapper, host rustflags, its target dir and target) must not
/// leak into a build for another target.
pub fn guest_cargo() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    for var in OUTER_BUILD_VARS {
        command.env_remove(var);
    }
    command
}

/// The outer build's settings a guest build must not see.
pub const OUTER_BUILD_VARS: [&str; 7] = [
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTFLAGS",
];
