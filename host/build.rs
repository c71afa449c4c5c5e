//! Builds the shipped services (`components/`) for wasm32-wasip2 so the
//! binary can embed them.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let components = root.join("components");
    // Shared by debug and release host builds; apart from the host's own
    // target dir, whose lock the outer cargo holds.
    let target_dir = root.join("target").join("wasm-components");

    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    for entry in ["Cargo.toml", "Cargo.lock", "sdk", "user", "order", "payment"] {
        println!("cargo:rerun-if-changed={}", components.join(entry).display());
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(components.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings (clippy's wrapper, host rustflags, its
    // target dir) must not leak into a build for another target.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    let status = command.status().expect("running cargo for the components");
    if !status.success() {
        panic!(
            "building the components in {} failed; is the target installed? \
             (rustup target add wasm32-wasip2)",
            components.display()
        );
    }
    let out = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=PITSTOP_BUILTIN_DIR={}", out.display());
}
