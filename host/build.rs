//! Builds the shipped services (`components/`) for wasm32-wasip2 so the
//! binary can embed them.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let components = root.join("components");
    // Shared by debug and release host builds; apart from the host's own
    // target dir, whose lock the outer cargo holds.
    let target_dir = root.join("target").join("wasm-components");

    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-changed=guest_cargo.rs");
    for entry in ["Cargo.toml", "Cargo.lock", "sdk", "user", "order", "payment"] {
        println!("cargo:rerun-if-changed={}", components.join(entry).display());
    }

    let mut command = guest_cargo();
    command
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(components.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
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

include!("guest_cargo.rs");
