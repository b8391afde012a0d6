#!/usr/bin/env bash
# Container contract test. `nix build .#image` cannot run here (no nixpkgs), so this builds the
# equivalent image: a static musl release binary in a scratch image whose config comes from
# the same nix/image-contract.json that nix/image.nix reads, and runs it the way the cluster
# does: read-only root, uid/gid 65532, no capabilities, no-new-privileges, tmpfs /tmp, config
# from env. It must become ready, serve a create/read round trip, log JSON lines, pass
# `shipshape healthcheck` inside the container, report the build revision, turn /readyz 503 on
# SIGTERM and exit 0 within the grace period as PID 1. Prints the image size.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

ensure podman musl-gcc readelf curl

arch=$(uname -m)
target="$arch-unknown-linux-musl"
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

# Same revision string the flake passes (self.rev or self.dirtyRev).
revision=$(git rev-parse HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] || revision="$revision-dirty"

log "static musl release build ($target)"
# Own target dir outside the checkout: never fights the workspace build, survives fresh clones.
target_dir="${SHIPSHAPE_MUSL_TARGET_DIR:-$CI_CACHE/musl-target}"
SHIPSHAPE_GIT_REVISION="$revision" cargo build --release --locked --package shipshape \
  --target "$target" --target-dir "$target_dir"
binary="$target_dir/$target/release/shipshape"
if readelf -lW "$binary" | grep -q INTERP || readelf -dW "$binary" | grep -q NEEDED; then
  die "$binary is dynamically linked"
fi
echo "  ok   static binary: $(stat -c %s "$binary") bytes"

work=$(mktemp -d /tmp/shipshape-container.XXXXXX)
name="shipshape-ct-$$"
image="localhost/shipshape:ci-$$"
# crun fails on these machines; runc works with this containers.conf (see ../shared/tools.md).
printf '[containers]\ndefault_ulimits = []\n' >"$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"
podman=(podman --storage-driver vfs --runtime /usr/sbin/runc)
pm() { "${podman[@]}" "$@"; }
cleanup() {
  pm rm -f "$name" >/dev/null 2>&1 || true
  pm rmi -f "$image" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

log "scratch image from nix/image-contract.json"
python3 - "$binary" "$work" "$revision" <<'PY'
import io, json, sys, tarfile, tomllib
binary, work, revision = sys.argv[1:]
contract = json.load(open("nix/image-contract.json"))
cfg = contract["config"]
workspace = tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]
package = tomllib.load(open("service/Cargo.toml", "rb"))["package"]
version = package["version"] if isinstance(package["version"], str) else workspace["version"]
# The labels nix/image.nix adds on top of the contract's.
labels = {**cfg["Labels"],
          "org.opencontainers.image.version": version,
          "org.opencontainers.image.revision": revision,
          "org.opencontainers.image.source": workspace["repository"],
          "org.opencontainers.image.licenses": workspace["license"]}

# Root filesystem: what the Nix image holds (binary, CA bundle, contract directories), with
# fixed owners, modes and mtimes.
def add(tar, name, mode, uid=0, gid=0, data=None):
    info = tarfile.TarInfo(name.lstrip("/"))
    info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 1
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

with tarfile.open(f"{work}/rootfs.tar", "w", format=tarfile.GNU_FORMAT) as tar:
    for d in ("/bin", "/etc", "/etc/ssl", "/etc/ssl/certs"):
        add(tar, d, 0o755)
    add(tar, cfg["Entrypoint"][0], 0o755, data=open(binary, "rb").read())
    add(tar, "/etc/ssl/certs/ca-bundle.crt", 0o644, data=open("/etc/ssl/certs/ca-certificates.crt", "rb").read())
    for d in contract["directories"]:
        uid, gid = map(int, d["owner"].split(":"))
        add(tar, d["path"], int(d["mode"], 8), uid, gid)

def seconds(ns):
    return f"{ns // 1_000_000_000}s"

hc = cfg["Healthcheck"]
assert hc["Test"][0] == "CMD", "only exec-form health checks (no shell in the image)"
lines = [
    "FROM scratch",
    "ADD rootfs.tar /",
    f"USER {cfg['User']}",
    f"WORKDIR {cfg['WorkingDir']}",
    *(f"EXPOSE {port}" for port in cfg["ExposedPorts"]),
    *("ENV {}={}".format(*(e.split("=", 1)[0], json.dumps(e.split("=", 1)[1]))) for e in cfg["Env"]),
    *(f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items())),
    f"STOPSIGNAL {cfg['StopSignal']}",
    f"HEALTHCHECK --interval={seconds(hc['Interval'])} --timeout={seconds(hc['Timeout'])} "
    f"--start-period={seconds(hc['StartPeriod'])} --retries={hc['Retries']} CMD {json.dumps(hc['Test'][1:])}",
    f"ENTRYPOINT {json.dumps(cfg['Entrypoint'])}",
]
if "Cmd" in cfg:
    lines.append(f"CMD {json.dumps(cfg['Cmd'])}")
open(f"{work}/Containerfile", "w").write("\n".join(lines) + "\n")
json.dump(labels, open(f"{work}/labels.json", "w"))
PY
sed 's/^/  | /' "$work/Containerfile"
pm build --quiet --format docker --no-cache -t "$image" -f "$work/Containerfile" "$work" >/dev/null

# The built config must be the contract: the same comparison the Nix `image` check makes.
pm image inspect "$image" | python3 -c '
import json, sys
inspect = json.load(sys.stdin)[0]
# podman reports the health check beside the config, not inside it.
json.dump({**inspect["Config"], "Healthcheck": inspect.get("Healthcheck")}, sys.stdout)' >"$work/config.json"
python3 nix/static-checks.py image-config nix/image-contract.json "$work/config.json" "$work/labels.json" \
  || die "the image config differs from nix/image-contract.json"
size=$(pm image inspect --format '{{.Size}}' "$image")
compressed=$(pm save --format docker-archive "$image" 2>/dev/null | gzip -n | wc -c)
mapfile -t health < <(python3 -c 'import json; [print(a) for a in json.load(open("nix/image-contract.json"))["config"]["Healthcheck"]["Test"][1:]]')

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
drain=1
grace=10

log "run it as the cluster would (read-only, 65532:65532, no capabilities, tmpfs /tmp) on $base"
started=$(date +%s.%N)
# --no-healthcheck: podman would schedule the image's HEALTHCHECK with systemd timers, which
# this machine lacks (the kubelet ignores it too); the same command is exec'd below instead.
pm run -d --name "$name" --network host --no-healthcheck \
  --read-only --read-only-tmpfs=false --tmpfs /tmp:rw,size=64m,mode=1777 \
  --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
  -e SHIPSHAPE_DATABASE__URL=sqlite:///tmp/shipshape.db \
  -e SHIPSHAPE_HTTP__LISTEN="127.0.0.1:$port" \
  -e SHIPSHAPE_HTTP__DRAIN_DELAY="${drain}s" \
  -e SHIPSHAPE_HTTP__SHUTDOWN_GRACE="${grace}s" \
  -e SHIPSHAPE_AUTH__ENABLED=false -e SHIPSHAPE_RATE_LIMIT__ENABLED=false \
  "$image" >/dev/null

logs() { pm logs "$name" 2>&1 | tail -n 40 | sed 's/^/  | /'; }
running() { [ "$(pm inspect --format '{{.State.Running}}' "$name")" = true ]; }
if ! wait_ready "$base/readyz" 30 running; then
  logs
  running || die "container exited before it became ready"
  die "/readyz not 200 within 30s"
fi
echo "  ok   /readyz 200 $(python3 -c "import time; print(f'{time.time() - $started:.1f}')")s after start"
[ "$(pm exec "$name" /bin/sh -c true 2>/dev/null && echo shell)" != shell ] || die "the image has a shell"
echo "  ok   no shell in the image"

log "create/read round trip on /v1/items"
curl -sS -o "$work/created.json" -D "$work/headers" -w '%{http_code}' \
  -H 'Content-Type: application/json' -d '{"name":"x","price":1.5,"quantity":1}' \
  "$base/v1/items" >"$work/status"
[ "$(cat "$work/status")" = 201 ] || { cat "$work/created.json"; logs; die "POST /v1/items: $(cat "$work/status"), want 201"; }
location=$(tr -d '\r' <"$work/headers" | sed -n 's/^[Ll]ocation: *//p')
[ -n "$location" ] || die "POST /v1/items: 201 without a Location header"
case "$location" in http*) url=$location ;; *) url="$base$location" ;; esac
[ "$(curl -sS -o "$work/read.json" -w '%{http_code}' "$url")" = 200 ] || die "GET $location is not 200"
python3 -c 'import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); assert b["name"]=="x" and a==b, (a,b)' \
  "$work/created.json" "$work/read.json" || die "GET $location does not return the created item"
echo "  ok   POST 201 Location: $location, GET 200 with the same item"

log "healthcheck inside the container, revision, JSON logs"
pm exec "$name" /bin/shipshape healthcheck --url "$base/readyz" || die "shipshape healthcheck failed inside the container"
echo "  ok   shipshape healthcheck --url $base/readyz exits 0"
# The image's HEALTHCHECK command as is: the default URL follows http.listen from the env.
pm exec "$name" "${health[@]}" || die "the image's health check command (${health[*]}) failed inside the container"
echo "  ok   ${health[*]} (the image's HEALTHCHECK, default URL) exits 0"
curl -sS "$base/metrics" | grep -F 'shipshape_build_info{' | grep -qF "revision=\"$revision\"" \
  || { curl -sS "$base/metrics" | grep -F shipshape_build_info; die "shipshape_build_info does not report revision $revision"; }
echo "  ok   shipshape_build_info reports revision $revision"
pm logs "$name" 2>/dev/null | python3 -c '
import json, sys
lines = [l for l in sys.stdin if l.strip()]
assert lines, "no log lines on stdout"
for l in lines:
    json.loads(l)
print(f"  ok   {len(lines)} stdout log lines, all JSON")' || die "stdout logs are not JSON lines"

log "SIGTERM to PID 1: drain, then exit 0 within drain_delay + shutdown_grace (${drain}s + ${grace}s)"
start=$(date +%s.%N)
pm kill --signal TERM "$name" >/dev/null
sleep 0.2
ready=$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz" || true)
alive=$(curl -s -o /dev/null -w '%{http_code}' "$base/healthz" || true)
code=$(timeout $((drain + grace + 5)) "${podman[@]}" wait "$name" || echo timeout)
elapsed=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
[ "$ready" = 503 ] || die "during the drain /readyz answered $ready, want 503"
[ "$alive" = 200 ] || die "during the drain /healthz answered $alive, want 200"
echo "  ok   while draining: /readyz 503, /healthz 200"
[ "$code" = 0 ] || { logs; die "exit code after SIGTERM: $code, want 0"; }
python3 -c "import sys; sys.exit(not $elapsed <= $drain + $grace)" || die "took ${elapsed}s to exit"
echo "  ok   exited 0 ${elapsed}s after SIGTERM"

mb() { python3 -c "print(f'{$1/1e6:.1f} MB')"; }
log "container contract test passed: image $(mb "$size") ($size bytes; $(mb "$compressed") gzipped), binary $(mb "$(stat -c %s "$binary")")"
