#!/usr/bin/env bash
# Where the server's CPU goes, per scenario: perf samples of the server (pinned to CPU 0) while
# wrk drives one scenario from CPU 1, summarised as self time per component (kernel, allocator,
# SQLite, tracing, hyper, ...) and the top functions. docs/performance.md quotes its output.
#
#   bench/profile.sh [SCENARIO] [SECONDS] [KEY=VALUE ...]
#     SCENARIO  get (default) | post | mix | list | health   (wrk modes of bench/lua/shipshape.lua)
#     KEY=VALUE extra server environment, e.g. SHIPSHAPE_LOG__LEVEL=warn
#
# Needs perf (Debian linux-perf; software cpu-clock sampling is enough, no PMU needed). Builds
# a release binary with symbols into target/profiling (the release profile strips them); perf
# 6.1 cannot read rustc's DWARF, so the profiled copy keeps the symbol table only.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=.ci/lib.sh
source .ci/lib.sh # PATH, ensure
mode=${1:-get}
secs=${2:-5}
shift $(($# < 2 ? $# : 2))

ensure perf wrk
if [ -z "${SHIPSHAPE_PROFILE_BIN:-}" ]; then
  CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/profiling} CARGO_PROFILE_RELEASE_STRIP=none \
    cargo build --release --locked -p shipshape
  src="${CARGO_TARGET_DIR:-target/profiling}/release/shipshape"
  SHIPSHAPE_PROFILE_BIN=$(mktemp /tmp/shipshape-prof.XXXXXX)
  objcopy --strip-debug "$src" "$SHIPSHAPE_PROFILE_BIN"
  trap 'rm -f "$SHIPSHAPE_PROFILE_BIN"' EXIT
fi
exec python3 bench/profile.py "$SHIPSHAPE_PROFILE_BIN" "$mode" "$secs" "$@"
