//! shipshape: a production-grade items REST service (library root; the binary is a thin CLI).
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod healthcheck;
pub mod http;
pub mod items;
pub mod metrics;
pub mod startup;
pub mod telemetry;

/// Version reported by `--version`, `/metrics` (`shipshape_build_info`) and start-up logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Git revision baked in at build time (`SHIPSHAPE_GIT_REVISION`, set by the Nix build and CI).
pub const GIT_REVISION: &str = env!("SHIPSHAPE_GIT_REVISION");

/// The compiler that built this binary.
pub const RUSTC_VERSION: &str = env!("SHIPSHAPE_RUSTC_VERSION");

/// `--version` output: crate version and git revision.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SHIPSHAPE_GIT_REVISION"),
    ")"
);
