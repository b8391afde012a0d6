#!/usr/bin/env bash
# DAST stage (issue 4): fuzz the live API from its own OpenAPI document with schemathesis.
#   - starts the debug binary (the rust stage builds it) on loopback with auth ON: an HS256
#     secret from a temp file (the `file:` secret form), rate limiting on but generous
#   - mints a bearer token with `shipshape token` and gives it to schemathesis
#   - runs every check, positive and negative data, all phases, bounded examples and time,
#     once per seed in DAST_SEEDS (several seeds with fewer examples each find more than one
#     seed with many: issue 13 found an ST202 that seed 4 never generated)
#   - passes only with zero failures: no 5xx, no response that violates the schema, no crash;
#     the server's own metrics must show no 5xx either and the process must still be ready
# Locally: bash .ci/dast.sh   (SHIPSHAPE_BIN=path to test another binary; DAST_EXAMPLES=N
# examples per operation and seed; DAST_SEEDS="4 7 13")
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

EXAMPLES="${DAST_EXAMPLES:-15}"
SEEDS="${DAST_SEEDS:-4 7 13}"
ensure schemathesis curl

bin="${SHIPSHAPE_BIN:-target/debug/shipshape}"
if [ ! -x "$bin" ]; then
  log "building $bin"
  cargo build -p shipshape --locked --quiet
fi
echo "  $("$bin" --version)  |  schemathesis $(schemathesis --version | awk '{print $NF}')"

work=$(mktemp -d /tmp/shipshape-dast.XXXXXX)
server_pid=""
cleanup() {
  local rc=$?
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$work/hs256-secret"
chmod 600 "$work/hs256-secret"

# Only SHIPSHAPE_* settings for the service; nothing else from this environment leaks in.
# exec: `run_bin serve &` then makes $! the server itself, not a subshell waiting for it, so
# the cleanup's kill stops the server (it used to be left running after every run).
run_bin() {
  exec env -i PATH="$PATH" HOME="$work" \
    SHIPSHAPE_HTTP__LISTEN="127.0.0.1:$port" \
    SHIPSHAPE_DATABASE__URL="sqlite://$work/data/dast.db" \
    SHIPSHAPE_AUTH__ENABLED=true \
    SHIPSHAPE_AUTH__HS256_SECRET="file:$work/hs256-secret" \
    SHIPSHAPE_RATE_LIMIT__PER_SECOND=2000 \
    SHIPSHAPE_RATE_LIMIT__BURST=4000 \
    SHIPSHAPE_HTTP__DRAIN_DELAY=0s \
    SHIPSHAPE_LOG__LEVEL=warn \
    "$bin" "$@"
}

log "start shipshape on $base (auth on)"
run_bin serve >"$work/server.log" 2>&1 &
server_pid=$!
wait_ready "$base/readyz" 30 kill -0 "$server_pid" || { cat "$work/server.log"; die "shipshape not ready (or exited at start-up)"; }

token=$(run_bin token --sub dast --scope items:read --scope items:write --ttl 30m)
[ -n "$token" ] || die "shipshape token printed nothing"
# Auth really is on: no token, no items.
status=$(curl -s -o /dev/null -w '%{http_code}' "$base/v1/items")
[ "$status" = 401 ] || die "GET /v1/items without a token answered $status, expected 401"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/v1/items")
[ "$status" = 200 ] || die "GET /v1/items with the minted token answered $status, expected 200"

# From the temp dir: schemathesis keeps its example database in ./.schemathesis.
config="$PWD/.ci/schemathesis.toml"
st=0
failed_seeds=""
for seed in $SEEDS; do
  log "schemathesis seed $seed: all checks, positive+negative data, $EXAMPLES examples per operation"
  set +e
  (cd "$work" && timeout 600 schemathesis --config-file "$config" run "$base/openapi.json" \
    --checks all \
    --mode all \
    --max-examples "$EXAMPLES" \
    --seed "$seed" \
    --workers 1 \
    --request-timeout 10 \
    --max-failures 50 \
    --suppress-health-check too_slow,filter_too_much \
    -H "Authorization: Bearer $token" \
    --output-sanitize true \
    --report junit --report-dir "$work/report-$seed" \
    --no-color) 2>&1 | tee -a "$work/schemathesis.log"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    st=$rc
    failed_seeds="$failed_seeds $seed"
    [ "$rc" -eq 124 ] && failed_seeds="$failed_seeds(timeout)"
  fi
done

log "server-side check"
kill -0 "$server_pid" 2>/dev/null || { tail -50 "$work/server.log"; die "shipshape crashed during the run"; }
curl -fsS "$base/readyz" >/dev/null || die "shipshape is no longer ready after the run"
errors=$(curl -fsS "$base/metrics" | grep '^http_server_requests_total{' | grep 'status="5' || true)
if [ -n "$errors" ]; then
  echo "$errors"
  die "the service answered 5xx during the run (see above)"
fi
if grep -q '"panic"' "$work/server.log"; then
  grep -m 5 '"panic"' "$work/server.log"
  die "the service panicked during the run"
fi
served=$(curl -fsS "$base/metrics" | awk '/^http_server_requests_total\{/ {n += $NF} END {print n+0}')
echo "  requests served: $served, 5xx: 0, panics: 0"

if [ "$st" -ne 0 ]; then
  die "schemathesis failed with seed(s)$failed_seeds (600 s per seed): see the summaries above"
fi
log "DAST passed: schemathesis clean, zero server errors"
