#!/usr/bin/env bash
# Instructions the server executes per request (all its threads, user space), counted by
# valgrind's callgrind: a figure that does not move with this VM's noise, for telling apart
# changes of a few percent that CPU-time benchmarks cannot (docs/observability.md#overhead).
#
#   bench/instructions.sh [--top] [--floor] [KEY=VALUE ...]      extra server environment, e.g.
#   bench/instructions.sh SHIPSHAPE_LOG__LEVEL=warn SHIPSHAPE_TELEMETRY__OTLP_ENDPOINT=
#   BENCH_MODE=health bench/instructions.sh --top          GET /healthz instead of GET by id
#   BENCH_MODE=health bench/instructions.sh --floor --top  the same on the bare axum floor of
#                                                          ../shared/peers (GET /health)
#
# The service runs under callgrind with an OTLP sink to export to (override the endpoint with
# an empty value for no exporter), auth and rate limiting off, 50 items stored. After a warm-up,
# the counters are zeroed, wrk sends GET /v1/items/{id} for 10 s, the exporter gets 6 s to
# flush, and the counters are dumped: instructions / requests (BENCH_MODE=health: GET /healthz). Kernel work (syscalls, TCP) is
# not counted. Repeat runs agree to about 0.3%. SHIPSHAPE_BIN selects the binary (default
# target/release/shipshape); the top functions are printed with --top.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=.ci/lib.sh
source .ci/lib.sh # tool installs, wait_ready
top=0 floor=0
while [ $# -gt 0 ]; do
  case $1 in
    --top) top=25 ;;
    --floor) floor=1 ;;
    *) break ;;
  esac
  shift
done
mode=${BENCH_MODE:-get}
case $mode in get | health) ;; *) die "BENCH_MODE=$mode: get or health" ;; esac
ensure valgrind wrk
if [ "$floor" = 1 ]; then
  [ "$mode" = health ] || die "--floor measures BENCH_MODE=health only (the floor's items are in memory, unseeded)"
  # The floor's own build, where the bench harness keeps it (bench/lib/harness.py, Peer).
  export CARGO_TARGET_DIR="$CI_CACHE/floor-target"
  (cd "$SHIPSHAPE_SHARED_DIR/peers/floor" && cargo build --release --locked -q)
  bin=$CARGO_TARGET_DIR/release/floor
else
  bin=${SHIPSHAPE_BIN:-${CARGO_TARGET_DIR:-target}/release/shipshape}
  [ -x "$bin" ] || cargo build --release --locked -p shipshape
fi

d=$(mktemp -d /tmp/shipshape-instr.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$d"; }
trap cleanup EXIT

python3 bench/lib/otlp_sink.py "$d/sink.json" >"$d/sink.port" &
pids+=($!)
for _ in $(seq 50); do [ -s "$d/sink.port" ] && break; sleep 0.1; done
port=$(python3 -c 'import sys; sys.path.insert(0, "bench/lib"); import harness; print(harness.free_port())')
env -i PATH="$PATH" HOME="$HOME" \
  SHIPSHAPE_HTTP__LISTEN="127.0.0.1:$port" SHIPSHAPE_DATABASE__URL="sqlite://$d/shipshape.db" \
  SHIPSHAPE_AUTH__ENABLED=false SHIPSHAPE_RATE_LIMIT__ENABLED=false SHIPSHAPE_LOG__FORMAT=json \
  SHIPSHAPE_TELEMETRY__OTLP_ENDPOINT="http://127.0.0.1:$(head -1 "$d/sink.port")" "$@" \
  valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" --dump-instr=no "$bin" $([ "$floor" = 1 ] && echo "$port" || echo serve) >"$d/server.log" 2>"$d/valgrind.log" &
vg=$!
pids+=("$vg")
health=/healthz ready=/readyz
[ "$floor" = 1 ] && health=/health ready=/health
wait_ready "http://127.0.0.1:$port$ready" 60 kill -0 "$vg" || { tail -5 "$d/valgrind.log" "$d/server.log" >&2; exit 1; }
# The bench harness's own seeding: 50 items, then their ids for the Lua script.
[ "$floor" = 1 ] || python3 - "$port" "$d/ids" <<'EOF'
import pathlib, sys
sys.path[:0] = ["bench/lib", "bench"]
import bench
port = int(sys.argv[1])
bench.seed(port, {}, 50)
ids, _ = bench.collect_ids_and_cursors(port, {})
pathlib.Path(sys.argv[2]).write_text("\n".join(ids) + "\n")
EOF

load() { BENCH_MODE=$mode BENCH_HEALTH_PATH=$health BENCH_IDS="$d/ids" wrk -t1 -c4 -d"$1" -s bench/lua/shipshape.lua "http://127.0.0.1:$port"; }
load 3s >/dev/null
sleep 6 # the warm-up's spans leave in the exporter's next batch, not in the measured window
callgrind_control -z "$vg" >/dev/null 2>&1
load 10s >"$d/wrk.txt"
sleep 6
callgrind_control -d "$vg" >/dev/null 2>&1
requests=$(grep -oE '^ *[0-9]+ requests' "$d/wrk.txt" | grep -oE '[0-9]+')
dump=$(find "$d" -name 'cg.out.*' | head -1)
what="GET request"
[ "$mode" = health ] && what="GET $health"
[ "$floor" = 1 ] && what="$what on the floor"
python3 - "$dump" "$d/cg.out" "$requests" "$top" "$*" "$what" <<'EOF'
import collections, re, sys
dump, final, n, top, label, what = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
names, self_cost = {}, collections.Counter()
for path in (final, dump):  # compressed names may be defined in either file
    for line in open(path, errors="replace"):
        m = re.match(r"^c?fn=\((\d+)\) (.*)$", line)
        if m:
            names[m.group(1)] = m.group(2)
fn, after_calls, total = None, False, 0
for line in open(dump, errors="replace"):
    if line.startswith("summary:"):
        total = int(line.split()[1])
    m = re.match(r"^fn=\((\d+)\)", line)
    if m:
        fn = m.group(1)
        continue
    if line.startswith("calls="):
        after_calls = True
        continue
    if line[:1].isdigit() or line[:1] in "+-*":
        if after_calls:
            after_calls = False  # inclusive cost of a call, not this function's own
            continue
        parts = line.split()
        if len(parts) >= 2 and fn:
            self_cost[fn] += int(parts[1])
print(f"{total // n} instructions per {what} ({n} requests; {label or 'defaults'})")
for k, v in self_cost.most_common(top):
    print(f"  {v / n:8.0f}  {names.get(k, k)[:140]}")
EOF
