#!/usr/bin/env bash
# Docs stage: every shell command in README.md and docs/*.md is run against a live service or,
# where it cannot run here (Nix, a cluster, Docker), checked for what can be checked (flake
# outputs, paths, manifests render, subcommands and flags exist). See .ci/docs.py for the rules
# and the `<!-- docs-check: ... -->` annotations, docs/pipeline.md for what this cannot catch.
#
# The service runs from the debug binary the rust stage built (`cargo run --release` in the docs
# is mapped to it, not compiled again), inside a private network namespace so the documented
# localhost:8080 cannot collide with anything else on the machine.
set -euo pipefail
# shellcheck source=.ci/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

command -v kubectl >/dev/null || die "kubectl (with kustomize) is required"
ensure curl unshare ip

bin=${SHIPSHAPE_BIN:-target/debug/shipshape}
if [ ! -x "$bin" ]; then
  log "build the debug binary (normally the rust stage has)"
  cargo build -p shipshape --locked
fi

log "docs: run or check every command in README.md and docs/*.md"
# unshare -n: a new network namespace with only a loopback interface, brought up first.
# shellcheck disable=SC2016 # $1 and $@ are the inner shell's
exec unshare --net -- sh -c 'ip link set lo up && exec python3 .ci/docs.py --bin "$@"' sh "$bin" "$@"
