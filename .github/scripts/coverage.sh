#!/usr/bin/env bash
# Line coverage of the workspace test suite (nextest, PostgreSQL tests included) with
# cargo-llvm-cov, failing under the threshold in .ci/coverage-threshold: the single number that
# both this CI job and .ci/run enforce. Raise it in that file as the tests grow.
#
# Needs: cargo, the llvm-tools rustup component, cargo-llvm-cov, cargo-nextest, PostgreSQL 15+
# binaries (initdb/pg_ctl; a throwaway cluster is started by .ci/lib.sh's start_postgres).
# Writes target/coverage/{lcov.info,summary.txt,html/} and, on GitHub, the summary to the job summary.
set -euo pipefail
cd "$(dirname "$0")/../.."
# initdb/pg_ctl live outside PATH on Debian/Ubuntu (the GitHub runner has PostgreSQL 16).
for d in /usr/lib/postgresql/*/bin; do if [ -d "$d" ]; then PATH="$d:$PATH"; fi; done
# shellcheck source=.ci/lib.sh
source .ci/lib.sh

threshold=$(tr -d '[:space:]' <.ci/coverage-threshold)
[[ $threshold =~ ^[0-9]+(\.[0-9]+)?$ ]] || die ".ci/coverage-threshold must hold one number, got '$threshold'"
out=target/coverage
mkdir -p "$out"

start_postgres # stopped on exit if it started one
log "cargo llvm-cov nextest (fail under $threshold% of lines)"
cargo llvm-cov nextest --workspace --locked --no-report
cargo llvm-cov report --lcov --output-path "$out/lcov.info"
cargo llvm-cov report --html --output-dir "$out"
cargo llvm-cov report --summary-only | tee "$out/summary.txt"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  { echo "### Line coverage (threshold $threshold%)"; echo '```'; cat "$out/summary.txt"; echo '```'; } \
    >>"$GITHUB_STEP_SUMMARY"
fi
cargo llvm-cov report --summary-only --fail-under-lines "$threshold" >/dev/null \
  || die "line coverage is under $threshold% (.ci/coverage-threshold)"
log "line coverage >= $threshold%"
