#!/usr/bin/env bash
# Rolling restart under load: keep a small, steady request load on BASE_URL while RESTART_CMD
# replaces the serving instances, and fail if a single request fails.
#
#   rolling-restart.sh --url BASE_URL --restart 'RESTART_CMD' [options]
#
#   --url URL            where the load goes (a load balancer, a NodePort, ...)
#   --restart CMD        shell command that restarts the service and returns once it is done,
#                        e.g. 'kubectl -n shipshape-dev rollout restart deploy/shipshape &&
#                              kubectl -n shipshape-dev rollout status deploy/shipshape --timeout=180s'
#   --workers N          concurrent clients (default 4)
#   --pause S            pause between one client's requests, seconds (default 0.02)
#   --warmup S           load before the restart starts (default 2)
#   --settle S           load after the restart finished (default 3)
#   --timeout S          hard limit for the restart command (default 300)
#   --min-requests N     fail if fewer requests were sent during the restart (default 20)
#   --read-after-write   also GET each created item back; only valid when every instance
#                        behind URL shares one database (PostgreSQL), not per-pod SQLite
#
# Each request is a new connection (curl per request), so a failure is never a stale keep-alive
# connection and the load balancer or kube-proxy cannot retry it away. Expected answers:
#   GET /healthz -> 200, GET /v1/items?limit=5 -> 200, POST /v1/items -> 201,
#   GET <Location> -> 200 (read-after-write only). Anything else, including a timeout or a
#   refused connection (reported as 000), is a failure.
# Ends with "rolling-restart: N passed, M failed"; exit 0 only with zero failures.
set -euo pipefail

url="" restart_cmd="" workers=4 pause=0.02 warmup=2 settle=3 timeout_s=300 min_requests=20 raw=0
while [ $# -gt 0 ]; do
  case $1 in
    --url) url=$2; shift 2 ;;
    --restart) restart_cmd=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --pause) pause=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --min-requests) min_requests=$2; shift 2 ;;
    --read-after-write) raw=1; shift ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -n "$url" ] || { echo "--url is required" >&2; exit 2; }
[ -n "$restart_cmd" ] || { echo "--restart is required" >&2; exit 2; }
url=${url%/}

work=$(mktemp -d "${TMPDIR:-/tmp}/shipshape-rr.XXXXXX")
pids=()
stop_workers() {
  touch "$work/stop"
  local p
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_workers; rm -rf "$work"' EXIT

# hit EXPECTED WHAT CURL_ARGS...: one request on a new connection; appends
# "<epoch_ms> <got> <expected> <what>" to $out. A curl error (refused, reset, timeout, short
# body) is recorded as "curl<exit>/<code>" so it can never pass as the expected status.
hit() {
  local expected=$1 what=$2 got rc
  shift 2
  got=$(curl -s -w '%{http_code}' --max-time 5 --connect-timeout 2 "$@") && rc=0 || rc=$?
  [ "$rc" -eq 0 ] || got="curl$rc/${got:-000}"
  echo "$(date +%s%3N) $got $expected $what" >>"$out"
  [ "$got" = "$expected" ]
}

# One client: loops until the stop file appears.
client() {
  local id=$1 i=0 loc hdr="$work/hdr-$1"
  out="$work/client-$1.log"
  while [ ! -e "$work/stop" ]; do
    i=$((i + 1))
    case $((i % 3)) in
      0) hit 200 GET/healthz -o /dev/null "$url/healthz" || true ;;
      1) hit 200 GET/v1/items -o /dev/null "$url/v1/items?limit=5" || true ;;
      2)
        if hit 201 POST/v1/items -o /dev/null -D "$hdr" -H 'Content-Type: application/json' \
          --data-binary "{\"name\":\"load-$id-$i\",\"price\":2.5,\"quantity\":$i}" "$url/v1/items" \
          && [ "$raw" = 1 ]; then
          loc=$(tr -d '\r' <"$hdr" | awk 'tolower($1) == "location:" { print $2 }')
          case $loc in http://* | https://*) loc=/${loc#*://*/} ;; esac
          hit 200 'GET/v1/items/{id}' -o /dev/null "$url$loc" || true
        fi
        ;;
    esac
    sleep "$pause"
  done
}

count() { cat "$work"/client-*.log 2>/dev/null | wc -l; }

echo "# rolling restart under load: $workers clients against $url"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url/readyz") || code=000
[ "$code" = 200 ] || { echo "FAIL: $url/readyz answered $code before the test; nothing to restart"; exit 1; }

for w in $(seq 1 "$workers"); do
  client "$w" &
  pids+=($!)
done
sleep "$warmup"

before=$(count)
echo "# $before requests during warm-up; restarting: $restart_cmd"
start=$SECONDS
restart_rc=0
timeout --kill-after=10 "$timeout_s" bash -c "$restart_cmd" || restart_rc=$?
restart_s=$((SECONDS - start))
after=$(count)
echo "# restart command finished in ${restart_s}s with exit $restart_rc; settling ${settle}s"
sleep "$settle"
stop_workers

cat "$work"/client-*.log >"$work/all.log" 2>/dev/null || : >"$work/all.log"
total=$(wc -l <"$work/all.log")
during=$((after - before))
fails=$(awk '$2 != $3' "$work/all.log" | wc -l)
ok_count=$((total - fails))

echo "# requests by endpoint and status:"
awk '{ print $4, $2 }' "$work/all.log" | sort | uniq -c | awk '{ printf "#   %6d  %s -> %s\n", $1, $2, $3 }'
if [ "$fails" -gt 0 ]; then
  echo "# first failed requests (epoch_ms got expected what):"
  # awk, not head: head exits after 20 lines, and under pipefail sort's SIGPIPE (exit 141) then
  # ended this script before its result line whenever many requests had failed.
  awk '$2 != $3' "$work/all.log" | sort -n | awk 'NR <= 20 { print "#   " $0 }'
fi
echo "# total $total requests, $during while the restart command ran (${restart_s}s), $fails failed"

rc=0
if [ "$restart_rc" -ne 0 ]; then
  echo "FAIL: the restart command exited $restart_rc"
  rc=1
fi
if [ "$during" -lt "$min_requests" ]; then
  echo "FAIL: only $during requests during the restart (need >= $min_requests): the load did not cover it"
  rc=1
fi
[ "$fails" -eq 0 ] || rc=1
echo "rolling-restart: $ok_count passed, $fails failed"
exit "$rc"
