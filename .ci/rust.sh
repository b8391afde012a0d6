#!/usr/bin/env bash
# Rust stage: formatting, clippy (-D warnings), the layer check, the whole test suite (unit, API over real HTTP
# on SQLite and PostgreSQL, process tests of the real binary) under line coverage, run from a
# copy of exactly the files the Nix source filter selects, and the debug binary that later
# stages run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

log "toolchain"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
rustup component list --installed 2>/dev/null | grep -q '^llvm-tools' || rustup component add llvm-tools
# promtool and prometheus: the observability tests check the live scrape with the real consumers.
# cargo-modules draws the module graph for the layer check (.ci/tools.toml pins the version).
ensure cargo-nextest cargo-llvm-cov cargo-modules promtool

log "rustfmt"
cargo fmt --all --check

log "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "layers (the module graph points one way: service/src/lib.rs, docs/architecture.md)"
python3 .ci/layers.py

log "build (the binary later stages run)"
cargo build --workspace --locked

log "tests (SQLite and PostgreSQL) with line coverage, from the Nix build's source files"
# The flake's nextest check sees only the files nix/source.nix selects, so the suite runs from a
# copy of exactly those files: a test that reads a file the filter drops fails here, not on the
# first `nix flake check`. nix-instantiate evaluates the filter spec (no nixpkgs needed).
ensure nix-instantiate
export NIX_CONFIG="build-users-group ="
root=$PWD
filtered=$(mktemp -d /tmp/shipshape-filtered-src.XXXXXX)
python3 nix/static-checks.py materialize "$filtered"
on_exit "rm -rf '$filtered'"
start_postgres
threshold=$(cat .ci/coverage-threshold)
# CI=true makes a missing PostgreSQL fail the PostgreSQL tests instead of skipping them. The
# checkout's target/ keeps the dependency builds; only the workspace crate is rebuilt.
(cd "$filtered" && CI=true CARGO_TARGET_DIR="$root/target" cargo llvm-cov nextest --workspace --locked \
  --no-fail-fast --fail-under-lines "$threshold" --summary-only)
