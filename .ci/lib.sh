# Shared helpers for the .ci/ stage scripts: cached tool installs, a throwaway PostgreSQL, logging.
# Sourced, never executed. Tool caches live outside the checkout so a fresh clone reuses them.

CI_CACHE="${SHIPSHAPE_CI_CACHE:-$HOME/.cache/shipshape-ci}"
CI_VENV="$CI_CACHE/venv"
mkdir -p "$CI_CACHE"
export PATH="$CI_VENV/bin:$HOME/.cargo/bin:/usr/lib/postgresql/15/bin:$PATH"
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true

# shared/ (advisory DB, vetted pins, tool notes) sits beside the checkout on developer machines
# and in the CI clone. A clone of a local checkout made elsewhere (git clone ~/shipshape /tmp/x)
# finds it beside its origin; anything else names it with SHIPSHAPE_SHARED_DIR. Exported, so
# every stage and nix/static-checks.py read the same one.
find_shared_dir() {
  local here origin
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if [ -d "$here/../shared" ]; then
    echo "$here/../shared"
    return
  fi
  origin=$(git -C "$here" remote get-url origin 2>/dev/null || true)
  if [ -d "$origin/../shared" ]; then
    (cd "$origin/../shared" && pwd)
    return
  fi
  echo "$here/../shared" # missing: the stages that need it say so
}
SHARED_DIR="${SHIPSHAPE_SHARED_DIR:-$(find_shared_dir)}"
export SHIPSHAPE_SHARED_DIR="$SHARED_DIR"

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# wait_until SECONDS CMD...: run CMD every 100 ms until it succeeds (return 0) or SECONDS are up
# (return 1).
wait_until() {
  local deadline=$(($(date +%s%3N) + $1 * 1000))
  shift
  until "$@"; do
    [ "$(date +%s%3N)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# http_ok URL: GET URL answers 200 (within 2 s).
http_ok() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null)" = 200 ]; }

# wait_ready URL SECONDS [ALIVE_CMD...]: wait until GET URL (a /readyz) answers 200, the one
# readiness wait of the shell scripts. With ALIVE_CMD (e.g. `kill -0 $pid`), give up as soon as
# it fails: the server died. Returns 0 when ready, 1 otherwise.
_ready_or_gone() { local url=$1; shift; http_ok "$url" || ! "$@" 2>/dev/null; }
wait_ready() {
  local url=$1 secs=$2
  shift 2
  if [ $# -eq 0 ]; then wait_until "$secs" http_ok "$url"; return; fi
  wait_until "$secs" _ready_or_gone "$url" "$@" && http_ok "$url"
}

# Tool installs are declared once, in .ci/tools.toml (nix/shell.nix builds the dev shell from
# the same file). Stage scripts call `ensure CMD...`; the ensure_* helpers below do the work.
TOOLS_TOML="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tools.toml"

# ensure CMD...: install each command as .ci/tools.toml declares it, unless it is installed
# already (then nothing is installed and no registry is asked: a pip tool counts when it is in
# its venv, anything else when PATH finds it). An entry marked optional only logs a failed
# install.
ensure() {
  local cmd kind venv optional
  local -a spec args
  for cmd in "$@"; do
    [ -x "$CI_VENV/bin/$cmd" ] && continue
    mapfile -t spec < <(_tool_spec "$cmd")
    [ "${#spec[@]}" -ge 3 ] || die "ensure $cmd: no usable [tools.$cmd] entry in $TOOLS_TOML"
    kind=${spec[0]} venv=${spec[1]} optional=${spec[2]} args=("${spec[@]:3}")
    case $kind in
      apt) ensure_apt "$cmd" "${args[@]}" ;;
      pip) ensure_pip "$cmd" "${args[@]}" ;;
      pip-venv) _pip_install "$CI_CACHE/venv-$venv" "$cmd" "${args[@]}" ;;
      cargo) ensure_cargo "$cmd" "${args[@]}" ;;
      *) command -v "$cmd" >/dev/null 2>&1 || die "$cmd is not installed, and $TOOLS_TOML has no way to install it here (nixpkgs only)" ;;
    esac || { [ "$optional" = 1 ] && log "$cmd not installed (optional)" && continue; die "installing $cmd failed"; }
  done
}

# _tool_spec CMD: kind, venv, optional (1 or 0), then the install arguments, one per line.
_tool_spec() {
  python3 - "$TOOLS_TOML" "$1" <<'PY'
import sys
try:
    import tomllib
except ImportError:
    sys.exit(f"{sys.argv[1]}: reading it needs Python 3.11+ (tomllib)")
t = tomllib.load(open(sys.argv[1], "rb")).get("tools", {}).get(sys.argv[2])
if t is None:
    sys.exit(f"{sys.argv[1]}: no [tools.{sys.argv[2]}]")
def as_list(v):
    return [v] if isinstance(v, str) else list(v)
opt = "1" if t.get("optional") else "0"
if "apt" in t:
    out = ["apt", "", opt] + as_list(t["apt"])
elif "pip" in t:
    out = ["pip-venv" if "venv" in t else "pip", t.get("venv", ""), opt] + as_list(t["pip"])
elif "cargo" in t:
    out = ["cargo", "", opt, t["cargo"]] + (["--version", t["version"]] if "version" in t else [])
else:
    out = ["none", "", opt]
print("\n".join(out))
PY
}

_apt_updated=""
# ensure_apt CMD PKG...: install Debian packages when CMD is not on PATH.
ensure_apt() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [ -z "$_apt_updated" ]; then apt-get update -qq >/dev/null; _apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_pip CMD SPEC...: install Python tools into the cached venv when CMD is missing.
ensure_pip() {
  local cmd=$1; shift
  _pip_install "$CI_VENV" "$cmd" "$@"
}
_pip_install() { # _pip_install VENV CMD SPEC...
  local venv=$1 cmd=$2; shift 2
  [ -x "$venv/bin/$cmd" ] && return 0
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$@"
}

# ensure_cargo CMD CRATE [ARGS...]: cargo install --locked when CMD is missing. Without the
# tools' own LTO and single codegen unit (cargo-deny: fat LTO, cargo-llvm-cov: LTO): on a
# fresh 2-core machine the first installs are most of the CI's hour, and these tools do not
# need the last percent of speed.
ensure_cargo() {
  local cmd=$1 crate=$2; shift 2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    nice -n 10 cargo install --locked --quiet "$crate" "$@"
}

# on_exit CMD: run CMD (a shell string) when the script exits, after every hook registered
# later (last in, first out), keeping the script's exit status. Stage scripts register their
# clean-up here instead of with `trap ... EXIT`, so no hook replaces another (start_postgres
# registers its own stop).
_EXIT_HOOKS=()
_run_exit_hooks() {
  local rc=$? i
  for ((i = ${#_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do eval "${_EXIT_HOOKS[i]}" || true; done
  exit "$rc"
}
on_exit() {
  _EXIT_HOOKS+=("$1")
  trap _run_exit_hooks EXIT
}

# start_postgres: start a throwaway PostgreSQL 15 cluster on a free loopback port, export
# SHIPSHAPE_TEST_PG_URL (superuser URL; tests create their own databases) and stop it on exit.
# When SHIPSHAPE_TEST_PG_URL is already set (an outer stage or the caller started one), that
# one is used and nothing is started or stopped here.
_PG_DIR="" _PG_AS=""
_pg_stop() {
  [ -n "$_PG_DIR" ] || return 0
  $_PG_AS pg_ctl -D "$_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$_PG_DIR"
  _PG_DIR=""
}

start_postgres() {
  [ -n "${SHIPSHAPE_TEST_PG_URL:-}" ] && return 0
  ensure initdb
  local dir port user=""
  dir=$(mktemp -d /tmp/shipshape-ci-pg.XXXXXX)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$dir"; user="runuser -u postgres --"
  fi
  # Globals, not locals: the exit hook runs after start_postgres has returned.
  _PG_DIR=$dir _PG_AS=$user
  on_exit _pg_stop
  $user initdb -D "$dir/data" -A trust -U postgres >/dev/null
  $user pg_ctl -D "$dir/data" -l "$dir/log" -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" -w start >/dev/null
  export SHIPSHAPE_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
  export SHIPSHAPE_TEST_PG_DIR="$dir"
  log "PostgreSQL 15 at $SHIPSHAPE_TEST_PG_URL"
}
