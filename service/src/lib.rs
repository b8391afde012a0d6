//! shipshape: a production-grade items REST service (library root; the binary is a thin CLI).
//!
//! # Layout
//!
//! Read it top to bottom: each module uses only the ones above it (`.ci/layers.py` checks this
//! on the graph `cargo modules` draws, and fails on any import that points up).
//!
//! - [`config`]: typed configuration, parsed once at start (figment: defaults < TOML file <
//!   `SHIPSHAPE_*` env); every bad value is one line naming its key and source.
//! - [`telemetry`]: JSON logs, trace context, span export; [`metrics`]: the Prometheus registry.
//! - [`items`]: the domain (`model`: items and their validation rules, `cursor`) and storage
//!   (`store`: the `ItemStore` trait, SQLite and PostgreSQL, `connect`).
//! - [`auth`]: token verification and scopes (no HTTP).
//! - [`http`]: the state requests share, the router and every layer a request crosses (security
//!   headers, observation, CORS, the guard, tower's limits), `ApiError` and its problem+json
//!   mapping, the item handlers, the probes, the docs and the server loop.
//! - [`startup`]: `Application::build` (connect, bind) and `run` (serve, drain on SIGTERM).
//! - [`cli`] and [`healthcheck`]: what the `shipshape` binary (`main.rs`) runs.
//!
//! docs/architecture.md draws the layers and the path of a request.
#![forbid(unsafe_code)]

pub mod config;

pub mod metrics;
pub mod telemetry;

pub mod items;

pub mod auth;

pub mod http;

pub mod startup;

pub mod cli;
pub mod healthcheck;

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
