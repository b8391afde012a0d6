#!/usr/bin/env bash
# Reliability stage: the benchmark harness in smoke mode (alone, the telemetry-overhead A/B, and
# side by side with the peers in ../shared/peers, issue 14) and the reliability experiments of
# issue 6 (bench/experiments/, docs/performance.md), against the real binary on loopback only:
#   3 kill -9 during writes            5 Idempotency-Key retries after dropped connections
#   4 PostgreSQL outage and recovery   6 10,000 idle connections and slow-loris clients
# Experiments 1 and 2 live where they are cheapest (issue 15): graceful shutdown under load is
# service/tests/process.rs (SIGTERM to the real binary) and ops.rs (in process); the rolling
# restart behind HAProxy is .github/scripts/rolling-restart.sh, which the deploy job runs against
# minikube and .ci/workflows.sh against .github/scripts/local-cluster.sh.
# Each prints one result line and fails the stage on a failure. Bounded: every experiment has
# its own time limit (and `timeout` here as a backstop); the whole stage takes a few minutes.
#   .ci/reliability.sh                  everything
#   .ci/reliability.sh db_outage        only the named experiments (file names without .py)
#   .ci/reliability.sh bench            only the benchmark smoke runs (bench, overhead, peers)
#   .ci/reliability.sh peers            only the side-by-side smoke run with the peers
#   SHIPSHAPE_BIN=path                  test that binary (default: target/debug/shipshape,
#                                       which the rust stage builds; built here if missing)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

log "tools"
# oha gives the benchmark's fixed-rate figures; the stage works without it (that scenario is skipped).
ensure wrk taskset initdb oha

if [ -z "${SHIPSHAPE_BIN:-}" ]; then
  [ -x target/debug/shipshape ] || cargo build --locked -p shipshape
  SHIPSHAPE_BIN=$PWD/target/debug/shipshape
fi
export SHIPSHAPE_BIN
log "binary: $SHIPSHAPE_BIN ($("$SHIPSHAPE_BIN" --version | head -1))"

all=(crash_durability db_outage idempotent_retries resource_bounds)
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=(bench "${all[@]}")

# The experiments open up to ~12,000 sockets per process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

results=()
failed=0

# The side-by-side run in smoke form: the seed (FastAPI), the floor (bare axum) and shipshape's
# variants (SQLite and PostgreSQL, telemetry as shipped and off), 1 s per scenario, 1 round.
# bench.py fails unless every server answered every scenario with no errors and every ratio was
# computed; here the ratio table must also have been printed. The peers' first start builds the
# floor (cargo, cached in $CI_CACHE/floor-target) and makes the seed's venv ($CI_CACHE/seed-venv):
# minutes on a fresh machine, hence the timeout; ~1 min once cached.
peers_smoke() {
  local out
  out=$(mktemp -d)
  log "benchmark side by side with the peers, smoke mode (debug shipshape: checks the harness, not the figures)"
  if timeout --kill-after=10 1200 bench/run.sh --peers --smoke --out "$out" | tee "$out/stdout" &&
    grep -q '^| scenario | server | req/s | CPU µs/req | PostgreSQL µs/req | CPU vs floor | req/s vs seed |$' "$out/stdout"; then
    results+=("peers-smoke: PASS (seed, floor and every shipshape variant answered every scenario without errors; ratio table printed)")
  else
    results+=("peers-smoke: FAIL (see above)")
    failed=1
  fi
  rm -rf "$out"
}

# PostgreSQL round trips and preparations per request, counted on the wire by a relay
# (bench/pg_round_trips.py): fails when a request kind takes more round trips than its budget
# (one for every single-statement write and read) or prepares a statement in steady state.
pg_round_trips() {
  log "PostgreSQL round trips per request (wire count, prepared statements)"
  if timeout --kill-after=10 180 python3 bench/pg_round_trips.py --bin "$SHIPSHAPE_BIN" --requests 50 --check; then
    results+=("pg-round-trips: PASS (every request kind within its round-trip budget, no statement prepared twice on one connection)")
  else
    results+=("pg-round-trips: FAIL (see above)")
    failed=1
  fi
}

for name in "${selected[@]}"; do
  if [ "$name" = peers ]; then
    peers_smoke
    continue
  fi
  if [ "$name" = bench ]; then
    log "benchmark harness, smoke mode (debug binary: checks the harness, not the figures)"
    out=$(mktemp -d)
    if timeout --kill-after=10 240 bench/run.sh --smoke --out "$out"; then
      results+=("bench-smoke: PASS (every scenario ran without errors; figures in docs/performance.md come from a release build)")
    else
      results+=("bench-smoke: FAIL (see above)")
      failed=1
    fi
    rm -rf "$out"
    log "telemetry overhead harness, smoke mode (bench/overhead.py: every variant serves, no errors)"
    if timeout --kill-after=10 120 python3 bench/overhead.py --cycles 1 --slice 1 --warmup 0.5; then
      results+=("overhead-smoke: PASS (off, off2, logs, export5, export10, export100 served without errors)")
    else
      results+=("overhead-smoke: FAIL (see above)")
      failed=1
    fi
    peers_smoke
    pg_round_trips
    continue
  fi
  [ -f "bench/experiments/$name.py" ] || die "no such experiment: $name (have: bench peers ${all[*]})"
  log "experiment: $name"
  line=""
  set +e
  timeout --kill-after=10 180 python3 "bench/experiments/$name.py" | tee /tmp/reliability-$$.log
  rc=${PIPESTATUS[0]}
  set -e
  line=$(grep -E '^[a-z-]+: (PASS|FAIL)' /tmp/reliability-$$.log | tail -1 || true)
  [ -n "$line" ] || line="$name: FAIL (exit $rc, no result line)"
  [ "$rc" -eq 0 ] || failed=1
  results+=("$line")
done
rm -f /tmp/reliability-$$.log

log "reliability results"
printf '  %s\n' "${results[@]}"
[ "$failed" -eq 0 ] || die "reliability experiments failed"
