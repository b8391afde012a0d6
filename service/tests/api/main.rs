//! The integration tests: one crate (one binary to build and link), a module per subject.
//! Most drive the app over real HTTP on an ephemeral port, each against SQLite and PostgreSQL
//! where storage matters; `process` and `observability` run the real binary.

#[macro_use]
mod helpers;

mod auth;
mod connections;
mod hardening;
mod hostile_input;
mod items;
mod keys;
mod observability;
mod ops;
mod process;
mod rate_limit;
mod router;
