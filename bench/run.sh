#!/usr/bin/env bash
# One command for the whole benchmark (docs/performance.md explains the method and the figures):
#
#   bench/run.sh              build the release binary, install wrk/oha if missing, run every
#                             scenario on SQLite and (when installed) PostgreSQL, 10 s each
#   bench/run.sh --smoke      ~2 s per scenario: checks the harness end to end (CI)
#   bench/run.sh --help       all options (duration, connections, fixed rate, backends, ...)
#
# Environment: SHIPSHAPE_BIN=path skips the build and benchmarks that binary (CI passes the debug
# build to the smoke run); CARGO_TARGET_DIR is honoured. Results: bench/results/<stamp>.json
# and .md (git-ignored). Everything runs on 127.0.0.1; the server is pinned to CPU 0 and the
# load generator to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/lib/postgresql/15/bin:$PATH"

say() { printf '[bench] %s\n' "$*" >&2; }

for a in "$@"; do
  case $a in -h | --help) exec python3 bench/bench.py --help ;; esac
done

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  }
}
command -v taskset >/dev/null || apt_install util-linux
command -v wrk >/dev/null || { say "installing wrk (apt)"; apt_install wrk; }
if ! command -v oha >/dev/null; then
  # oha gives the open-loop (fixed-rate) figures; without it that scenario is skipped.
  say "installing oha (cargo install --locked oha, a few minutes, once)"
  nice -n 10 cargo install --locked --quiet oha || say "oha install failed: the fixed-rate scenario will be skipped"
fi

if [ -z "${SHIPSHAPE_BIN:-}" ]; then
  say "building the release binary"
  cargo build --release --locked -p shipshape
  SHIPSHAPE_BIN="${CARGO_TARGET_DIR:-target}/release/shipshape"
fi
export SHIPSHAPE_BIN

# The harness pins and measures processes and raises no limits itself; 64 connections is far
# below any default limit.
exec python3 bench/bench.py --command "bench/run.sh $*" "$@"
