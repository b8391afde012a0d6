#!/usr/bin/env bash
# Smoke test for a running shipshape: probes, a create/read round trip, /metrics, problem+json.
#
#   smoke.sh [BASE_URL]            BASE_URL defaults to $SMOKE_URL, then http://127.0.0.1:8080
#
# The same script runs in the deploy job against the minikube NodePort and in .ci/workflows.sh
# against a locally started binary. It needs only bash, curl and jq (or python3), and takes its
# readiness wait from .ci/lib.sh.
# Environment:
#   SMOKE_WAIT     seconds to wait for /readyz to answer 200 before testing (default 30)
#   SMOKE_TIMEOUT  per-request timeout in seconds (default 5)
#   SMOKE_CLEANUP  1 (default) deletes the item the test created
# Prints one "ok"/"not ok" line per check and ends with "smoke: N passed, M failed";
# exits 0 only when every check passed.
set -euo pipefail
# shellcheck source=.ci/lib.sh
source "$(dirname "$0")/../../.ci/lib.sh" # wait_ready

base=${1:-${SMOKE_URL:-http://127.0.0.1:8080}}
base=${base%/}
wait_s=${SMOKE_WAIT:-30}
req_timeout=${SMOKE_TIMEOUT:-5}
cleanup=${SMOKE_CLEANUP:-1}

work=$(mktemp -d "${TMPDIR:-/tmp}/shipshape-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
n=0
ok() { n=$((n + 1)); passed=$((passed + 1)); printf 'ok %d - %s\n' "$n" "$1"; }
not_ok() {
  n=$((n + 1)); failed=$((failed + 1)); printf 'not ok %d - %s\n' "$n" "$1"
  shift
  local line
  for line in "$@"; do printf '#   %s\n' "$line"; done
}

# req METHOD PATH [BODY]: sets $status, body in $work/body, headers in $work/headers.
req() {
  local method=$1 path=$2 body=${3:-}
  local -a args=(-sS -X "$method" -o "$work/body" -D "$work/headers" -w '%{http_code}'
    --max-time "$req_timeout" --connect-timeout 3)
  if [ -n "$body" ]; then
    args+=(-H 'Content-Type: application/json' --data-binary "$body")
  fi
  : >"$work/body"; : >"$work/headers"
  status=$(curl "${args[@]}" "$base$path" 2>"$work/curl.err") || status=000
}

# header NAME: value of a response header from the last request (case-insensitive, last wins).
header() {
  tr -d '\r' <"$work/headers" | awk -v name="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" '
    { i = index($0, ":"); if (i == 0) next
      k = tolower(substr($0, 1, i - 1)); v = substr($0, i + 1); sub(/^[ \t]+/, "", v)
      if (k == name) last = v }
    END { print last }'
}

# json_canonical FILE: the document with sorted keys, so two bodies compare by content.
json_canonical() {
  if command -v jq >/dev/null 2>&1; then
    jq -S -c . "$1"
  else
    python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), sort_keys=True, separators=(",", ":")))' "$1"
  fi
}

# json_field FILE KEY: a top-level string/number field, empty when absent.
json_field() {
  if command -v jq >/dev/null 2>&1; then
    jq -r --arg k "$2" '.[$k] // empty' "$1"
  else
    python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
  fi
}

body_head() { head -c 300 "$work/body" | tr -d '\r' | tr '\n' ' '; }

echo "# smoke test against $base"

# 0. Wait (bounded) until the service says it is ready; a rollout may still be settling.
wait_ready "$base/readyz" "$wait_s" || true # step 2 reports it

# 1. Liveness.
req GET /healthz
if [ "$status" = 200 ]; then ok "GET /healthz -> 200"
else not_ok "GET /healthz -> 200" "got $status: $(body_head) $(cat "$work/curl.err")"; fi

# 2. Readiness.
req GET /readyz
if [ "$status" = 200 ]; then ok "GET /readyz -> 200"
else not_ok "GET /readyz -> 200 (waited ${wait_s}s)" "got $status: $(body_head) $(cat "$work/curl.err")"; fi

# 3. Create: 201 with a Location header.
payload='{"name":"smoke","price":1.5,"quantity":1}'
req POST /v1/items "$payload"
location=$(header location)
cp "$work/body" "$work/created.json"
if [ "$status" = 201 ] && [ -n "$location" ]; then
  ok "POST /v1/items -> 201 + Location ($location)"
else
  not_ok "POST /v1/items -> 201 + Location" "got $status, Location='$location': $(body_head)"
fi

# 4. Read back through Location: 200 and the same representation.
if [ -n "$location" ]; then
  case $location in
    http://* | https://*) path=/${location#*://*/} ;;
    *) path=$location ;;
  esac
  req GET "$path"
  if [ "$status" = 200 ] && created=$(json_canonical "$work/created.json" 2>/dev/null) \
    && fetched=$(json_canonical "$work/body" 2>/dev/null) && [ "$created" = "$fetched" ] \
    && [ "$(json_field "$work/body" name)" = smoke ]; then
    ok "GET $path -> 200, same body as the create response"
  else
    not_ok "GET Location -> 200, same body" "got $status" "created: $(head -c 300 "$work/created.json")" \
      "fetched: $(body_head)"
  fi
else
  not_ok "GET Location -> 200, same body" "skipped: no Location from the create"
  path=""
fi

# 5. Metrics: OpenMetrics text that counts HTTP requests.
req GET /metrics
if [ "$status" = 200 ] && grep -q '^http_server_requests_total' "$work/body"; then
  ok "GET /metrics -> 200 with http_server_requests_total"
else
  not_ok "GET /metrics -> 200 with http_server_requests_total" "got $status: $(body_head)"
fi

# 6. Errors are RFC 9457 problem+json: an unknown item and an unknown route.
for probe in "/v1/items/00000000-0000-7000-8000-000000000000" "/no-such-route-smoke"; do
  req GET "$probe"
  ctype=$(header content-type)
  if [ "$status" = 404 ] && [[ $ctype == application/problem+json* ]] \
    && [ "$(json_field "$work/body" status)" = 404 ]; then
    ok "GET $probe -> 404 application/problem+json"
  else
    not_ok "GET $probe -> 404 application/problem+json" "got $status, Content-Type='$ctype': $(body_head)"
  fi
done

# 7. Clean up what the smoke test wrote (not counted when disabled).
if [ "$cleanup" = 1 ] && [ -n "$path" ]; then
  req DELETE "$path"
  if [ "$status" = 204 ] || [ "$status" = 200 ]; then ok "DELETE $path -> $status"
  else not_ok "DELETE $path -> 204" "got $status: $(body_head)"; fi
fi

echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
