#!/usr/bin/env bash
# A two-instance shipshape "cluster" on loopback behind HAProxy, so the rolling-restart test that
# the deploy job runs against Kubernetes can run on a laptop or in .ci/run as well.
#
#   local-cluster.sh up DIR        start 2 instances and HAProxy; prints the load balancer URL
#   local-cluster.sh restart DIR   rolling restart: one instance at a time, SIGTERM (graceful
#                                  drain), wait for exit 0, start a new process, wait until it is
#                                  ready and back in rotation, then the next one
#   local-cluster.sh kill DIR      negative control: SIGKILL every instance at once, restart them
#   local-cluster.sh down DIR      stop everything (graceful) and print how each instance exited
#
# Environment for `up`:
#   SERVICE_BIN               the binary (default target/debug/shipshape)
#   SHIPSHAPE_DATABASE__URL     shared database for both instances (PostgreSQL); when unset each
#                               instance gets its own SQLite file in DIR (availability only: an item
#                               created on one instance is not visible on the other)
#   other SHIPSHAPE_*           passed through (e.g. SHIPSHAPE_HTTP__DRAIN_DELAY=1s)
#
# HAProxy plays kube-proxy + readiness: it health-checks GET /readyz every 200 ms and takes an
# instance out of rotation at the first failed check, so an instance that turns /readyz to 503 on
# SIGTERM and keeps serving for its drain delay loses no request. `retries 0`: HAProxy never
# retries a failed request on the other instance, so a request that hits a closed listener is
# reported to the client as a failure instead of being hidden.
# Everything listens on 127.0.0.1 only.
set -euo pipefail
# shellcheck source=.ci/lib.sh
source "$(dirname "$0")/../../.ci/lib.sh" # wait_until, http_ok

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then sed -n '2,12p' "$0"; exit 2; fi
instances=(1 2)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now_ms() { date +%s%3N; }
log() { printf '[local-cluster] %s\n' "$*"; }
pid_of() { cat "$dir/inst-$1.pid" 2>/dev/null || true; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

lb_status() {
  curl -s --max-time 1 "http://127.0.0.1:$(cat "$dir/stats.port")/stats;csv" \
    | awk -F, -v s="i$1" '$1 == "shipshape" && $2 == s { print $18 }'
}
lb_up() { [ "$(lb_status "$1")" = UP ]; }
lb_down() { [ "$(lb_status "$1")" = DOWN ]; }
all_up() { local i; for i in "${instances[@]}"; do lb_up "$i" || return 1; done; }
exited() { ! alive "$1"; }

# start_instance I: start instance I on its port with the environment recorded by `up`, so a
# restarted process gets exactly the configuration of the first one.
start_instance() {
  local i=$1 port db
  local -a envs=()
  port=$(cat "$dir/inst-$i.port")
  db=$(cat "$dir/database-url")
  [ -n "$db" ] || db="sqlite://$dir/inst-$i.sqlite"
  mapfile -d '' -t envs <"$dir/env0"
  rm -f "$dir/inst-$i.pid" "$dir/inst-$i.exit"
  (
    # sh -c records the PID that `exec` hands to the binary; the subshell then records the exit code.
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner sh
    env "${envs[@]}" SHIPSHAPE_HTTP__LISTEN="127.0.0.1:$port" SHIPSHAPE_DATABASE__URL="$db" \
      sh -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/inst-$i.pid" "$bin" serve \
      >>"$dir/inst-$i.log" 2>&1 && rc=0 || rc=$?
    echo "$rc" >"$dir/inst-$i.exit"
  ) </dev/null >/dev/null 2>&1 &
  wait_until 5 test -s "$dir/inst-$i.pid" || { log "instance $i did not start"; return 1; }
}

# stop_instance I SIGNAL: signal, wait for the exit (bounded), print how it went.
stop_instance() {
  local i=$1 sig=$2 pid t0 rc
  pid=$(pid_of "$i")
  t0=$(now_ms)
  alive "$pid" || { log "instance $i (pid ${pid:-?}) is not running"; return 1; }
  kill "-$sig" "$pid"
  wait_until 60 exited "$pid" || { log "instance $i (pid $pid) still running 60s after SIG$sig"; return 1; }
  wait_until 5 test -s "$dir/inst-$i.exit" || true
  rc=$(cat "$dir/inst-$i.exit" 2>/dev/null || echo '?')
  log "instance $i: pid $pid exited $rc $(( $(now_ms) - t0 )) ms after SIG$sig"
  [ "$sig" = KILL ] || [ "$rc" = 0 ]
}

wait_in_rotation() {
  local i=$1
  wait_ready "http://127.0.0.1:$(cat "$dir/inst-$i.port")/readyz" 30 alive "$(pid_of "$i")" || { log "instance $i not ready after 30s"; tail -n 20 "$dir/inst-$i.log"; return 1; }
  wait_until 10 lb_up "$i" || { log "instance $i ready but HAProxy says '$(lb_status "$i")'"; return 1; }
}

case $cmd in
  up)
    bin=${SERVICE_BIN:-target/debug/shipshape}
    bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
    [ -x "$bin" ] || { log "no binary at $bin"; exit 1; }
    command -v haproxy >/dev/null || { log "haproxy is not installed"; exit 1; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    echo "$bin" >"$dir/bin"
    printf '%s' "${SHIPSHAPE_DATABASE__URL:-}" >"$dir/database-url"
    env -0 | grep -z '^SHIPSHAPE_' | grep -zv -e '^SHIPSHAPE_HTTP__LISTEN=' -e '^SHIPSHAPE_DATABASE__URL=' \
      >"$dir/env0" || true
    for i in "${instances[@]}"; do free_port >"$dir/inst-$i.port"; done
    free_port >"$dir/lb.port"
    free_port >"$dir/stats.port"
    {
      printf 'global\n  maxconn 2048\n\n'
      printf 'defaults\n  mode http\n  timeout connect 2s\n  timeout client 15s\n  timeout server 15s\n'
      printf '  timeout check 1s\n  retries 0\n  option http-server-close\n  http-reuse never\n\n'
      printf 'frontend stats\n  bind 127.0.0.1:%s\n  stats enable\n  stats uri /stats\n\n' "$(cat "$dir/stats.port")"
      printf 'frontend web\n  bind 127.0.0.1:%s\n  default_backend shipshape\n\n' "$(cat "$dir/lb.port")"
      printf 'backend shipshape\n  option httpchk\n  http-check send meth GET uri /readyz\n'
      printf '  http-check expect status 200\n'
      printf '  default-server check inter 200ms fastinter 100ms downinter 200ms rise 1 fall 1\n'
      for i in "${instances[@]}"; do printf '  server i%s 127.0.0.1:%s\n' "$i" "$(cat "$dir/inst-$i.port")"; done
    } >"$dir/haproxy.cfg"
    haproxy -c -q -f "$dir/haproxy.cfg"
    if [ -s "$dir/database-url" ]; then
      # One migration before two instances start, so they do not race to create the schema.
      "$bin" migrate >>"$dir/migrate.log" 2>&1 || { log "migrate failed"; cat "$dir/migrate.log"; exit 1; }
    fi
    for i in "${instances[@]}"; do start_instance "$i"; done
    ( sh -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/haproxy.pid" haproxy -db -f "$dir/haproxy.cfg" \
      >>"$dir/haproxy.log" 2>&1 ) </dev/null >/dev/null 2>&1 &
    wait_until 5 test -s "$dir/haproxy.pid"
    for i in "${instances[@]}"; do wait_in_rotation "$i"; done
    log "2 instances (ports $(cat "$dir/inst-1.port") $(cat "$dir/inst-2.port")) behind HAProxy"
    echo "http://127.0.0.1:$(cat "$dir/lb.port")"
    ;;
  restart)
    bin=$(cat "$dir/bin")
    for i in "${instances[@]}"; do
      wait_until 10 all_up || { log "not every instance is in rotation; refusing to restart"; exit 1; }
      old=$(pid_of "$i")
      t0=$(now_ms)
      stop_instance "$i" TERM &
      stopper=$!
      if wait_until 10 lb_down "$i"; then
        log "instance $i: out of rotation $(( $(now_ms) - t0 )) ms after SIGTERM"
      else
        log "instance $i: HAProxy never marked it down"
      fi
      wait "$stopper"
      start_instance "$i"
      wait_in_rotation "$i"
      log "instance $i: pid $old -> $(pid_of "$i"), back in rotation $(( $(now_ms) - t0 )) ms after SIGTERM"
    done
    ;;
  kill)
    bin=$(cat "$dir/bin")
    for i in "${instances[@]}"; do stop_instance "$i" KILL; done
    sleep 1
    for i in "${instances[@]}"; do start_instance "$i"; done
    for i in "${instances[@]}"; do wait_in_rotation "$i"; done
    ;;
  down)
    rc=0
    for i in "${instances[@]}"; do
      if alive "$(pid_of "$i")"; then stop_instance "$i" TERM || rc=1; fi
    done
    hp=$(cat "$dir/haproxy.pid" 2>/dev/null || true)
    if alive "$hp"; then kill "$hp"; wait_until 10 exited "$hp" || kill -9 "$hp" || true; fi
    exit "$rc"
    ;;
  *) echo "unknown command: $cmd" >&2; exit 2 ;;
esac
