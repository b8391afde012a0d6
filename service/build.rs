//! Bakes the git revision and the compiler version into the binary (`--version`, `shipshape_build_info`).

use std::process::Command;

fn main() {
    // The Nix build and CI pass the revision in; a plain `cargo build` reports "unknown".
    println!("cargo:rerun-if-env-changed=SHIPSHAPE_GIT_REVISION");
    let revision = std::env::var("SHIPSHAPE_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SHIPSHAPE_GIT_REVISION={revision}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SHIPSHAPE_RUSTC_VERSION={version}");
}
