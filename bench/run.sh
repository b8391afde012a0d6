#!/usr/bin/env bash
# One command for the whole benchmark (docs/performance.md explains the method and the figures):
#
#   bench/run.sh              build the release binary, install wrk/oha if missing, run every
#                             scenario on SQLite and (when installed) PostgreSQL, 10 s each
#   bench/run.sh --smoke      ~2 s per scenario: checks the harness end to end (CI)
#   bench/run.sh --peers      side by side with the peers in ../shared/peers (the seed FastAPI
#                             service, the bare axum floor) and shipshape on SQLite/PostgreSQL with
#                             telemetry as shipped and off: 3 interleaved rounds, 5 s per
#                             scenario, the ratio table (--peers --smoke: 1 round, 1 s; CI)
#   bench/run.sh --help       all options (duration, connections, fixed rate, backends, ...)
#
# Environment: SHIPSHAPE_BIN=path skips the build and benchmarks that binary (CI passes the debug
# build to the smoke run); CARGO_TARGET_DIR is honoured. Results: bench/results/<stamp>.json
# and .md (git-ignored). Everything runs on 127.0.0.1; the server is pinned to CPU 0 and the
# load generator to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=.ci/lib.sh
source .ci/lib.sh # PATH (cargo, PostgreSQL 15), ensure

say() { printf '[bench] %s\n' "$*" >&2; }

for a in "$@"; do
  case $a in -h | --help) exec python3 bench/bench.py --help ;; esac
done

# oha gives the open-loop (fixed-rate) figures; without it that scenario is skipped. A first
# install of oha takes a few minutes (cargo install).
ensure taskset wrk oha

if [ -z "${SHIPSHAPE_BIN:-}" ]; then
  say "building the release binary"
  cargo build --release --locked -p shipshape
  SHIPSHAPE_BIN="${CARGO_TARGET_DIR:-target}/release/shipshape"
fi
export SHIPSHAPE_BIN

# The harness pins and measures processes and raises no limits itself; 64 connections is far
# below any default limit.
exec python3 bench/bench.py --command "bench/run.sh $*" "$@"
