"""Shared plumbing for the Python glue (Python stdlib only): the benchmark, the reliability
experiments, the backup drill (kustomize/tests/backup_drill.py) and the docs check (.ci/docs.py).

Starts the real `shipshape` binary on loopback with a throwaway database, waits for /readyz
(`wait_ready`, the one readiness wait of the Python code), reads its CPU time and memory from
/proc, runs a throwaway PostgreSQL cluster (`Postgres`, the one PostgreSQL helper of the Python
code; tests that only need a database use $SHIPSHAPE_TEST_PG_URL from .ci/lib.sh's
start_postgres instead), and turns auth on automatically when the binary has a `token`
subcommand (and rate limiting off when the binary knows `rate_limit`). Starts the peers of
../shared/peers (`Peer`: the seed FastAPI service and the bare axum floor) through their own
run.sh, read-only, with their build and venv cached beside the CI tools.
Everything here talks to 127.0.0.1 only and every wait is bounded.
"""

from __future__ import annotations

import http.client as httpc
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
PG_BIN = pathlib.Path(os.environ.get("SHIPSHAPE_PG_BIN", "/usr/lib/postgresql/15/bin"))
# User-Agent of the harness's own probe requests, so load-generator traffic can be told apart
# from them in the server log.
PROBE_UA = "shipshape-harness-probe"


class Failure(Exception):
    """An experiment's expectation did not hold."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(explicit: str | None = None) -> pathlib.Path:
    """The binary to test: $SHIPSHAPE_BIN, else target/release, else target/debug."""
    candidates = [explicit, os.environ.get("SHIPSHAPE_BIN")]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    candidates += [str(target / "release" / "shipshape"), str(target / "debug" / "shipshape")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return pathlib.Path(c).resolve()
    raise SystemExit("no shipshape binary: build it or set SHIPSHAPE_BIN")


# --------------------------------------------------------------------------------------------
# Features of the binary: auth (JWT) and rate limiting arrive in a later issue; detect them.


@dataclass
class Features:
    auth: bool  # `shipshape token` exists: auth on with a minted token
    auth_config: bool  # an [auth] section exists (auth may be on by default)
    rate_limit: bool
    telemetry: bool  # a [telemetry] section: spans can be exported over OTLP
    help: str


def features(binary: pathlib.Path) -> Features:
    help_text = subprocess.run(
        [str(binary), "--help"], capture_output=True, text=True, timeout=10
    ).stdout
    auth = any(line.strip().startswith("token") for line in help_text.splitlines())
    cfg = ""
    # `config` may refuse a default config (auth on without a key): retry with auth off.
    for extra in ({}, {"SHIPSHAPE_AUTH__ENABLED": "false"}):
        out = subprocess.run(
            [str(binary), "config"],
            capture_output=True,
            text=True,
            timeout=10,
            env=clean_env(extra),
            cwd=tempfile.gettempdir(),
        )
        if out.returncode == 0:
            cfg = out.stdout
            break
    sections = {line.strip() for line in cfg.splitlines() if line.startswith("[")}
    return Features(
        auth=auth,
        auth_config="[auth]" in sections,
        rate_limit="[rate_limit]" in sections,
        telemetry="[telemetry]" in sections,
        help=help_text,
    )


@dataclass
class Auth:
    """Environment for the server and the header for clients (empty when there is no auth)."""

    env: dict = field(default_factory=dict)
    token: str | None = None
    notes: list = field(default_factory=list)

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def setup_auth(binary: pathlib.Path, workdir: pathlib.Path, feats: Features | None = None) -> Auth:
    """Auth on with a fresh HS256 secret and a bearer token when the binary supports it; rate
    limiting off (load tests measure the service, not the limiter)."""
    feats = feats or features(binary)
    auth = Auth()
    if feats.rate_limit:
        auth.env["SHIPSHAPE_RATE_LIMIT__ENABLED"] = "false"
        auth.notes.append("rate limiting off")
    if not feats.auth:
        if feats.auth_config:
            # An [auth] section but no way to mint a token: measure without auth, and say so.
            auth.env["SHIPSHAPE_AUTH__ENABLED"] = "false"
            auth.notes.append("auth OFF: the binary has [auth] but no `token` subcommand")
        else:
            auth.notes.append("auth: not in this binary (no `token` subcommand)")
        return auth
    secret = workdir / "hs256.secret"
    secret.write_text(secrets.token_hex(32) + "\n")
    secret.chmod(0o600)
    auth.env["SHIPSHAPE_AUTH__HS256_SECRET"] = f"file:{secret}"
    out = subprocess.run(
        [str(binary), "token", "--sub", "bench", "--scope", "items:read items:write", "--ttl", "1h"],
        capture_output=True,
        text=True,
        timeout=10,
        env=clean_env(auth.env),
        cwd=workdir,
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise SystemExit(f"`shipshape token` failed ({out.returncode}): {out.stderr.strip()}")
    auth.token = out.stdout.strip().splitlines()[-1].strip()
    auth.notes.append("auth on (HS256 bearer token)")
    return auth


def clean_env(extra: dict) -> dict:
    """PATH/HOME/LANG plus `extra`: no stray SHIPSHAPE_* from the caller's environment leaks in."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
    env.update(extra)
    return env


class OtlpSink:
    """bench/lib/otlp_sink.py as a subprocess (pinned to `cpu`): somewhere to export spans to."""

    def __init__(self, workdir: pathlib.Path, cpu: int | None = None):
        self.stats_path = workdir / "otlp-sink.json"
        self.proc = subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).with_name("otlp_sink.py")), str(self.stats_path)],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )
        self.port = int(self.proc.stdout.readline())

    def env(self) -> dict:
        return {"SHIPSHAPE_TELEMETRY__OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}"}

    def stop(self) -> dict:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}


# --------------------------------------------------------------------------------------------
# /proc readings


def cpu_seconds(pid: int) -> float:
    """utime+stime of the whole process (all threads, live and exited), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0, needs privileges)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process tree: utime+stime+cutime+cstime of `root` and of each live
    descendant, so a worker that forked (uvicorn --workers N) counts, and one that has exited and
    been reaped still counts through its parent's cutime/cstime (each once). For PostgreSQL
    (root: the postmaster) that keeps the CPU of backends and autovacuum workers that exit
    during a measurement; summing the live children alone lost it and could go negative."""
    total = 0.0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / CLK_TCK
        except (OSError, IndexError, ValueError):
            continue
    return total


# --------------------------------------------------------------------------------------------
# Small blocking HTTP client for set-up and probes


def request(
    port: int,
    method: str,
    path: str,
    body=None,
    headers: dict | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict, bytes]:
    conn = httpc.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"User-Agent": PROBE_UA}
        h.update(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def status_of(port: int, path: str, timeout: float = 1.0, headers: dict | None = None) -> int:
    """Status code, or 0 when there is no answer."""
    try:
        return request(port, "GET", path, headers=headers, timeout=timeout)[0]
    except (OSError, httpc.HTTPException):
        return 0


def wait_ready(
    port: int,
    timeout: float = 30.0,
    interval: float = 0.05,
    alive=None,
    path: str = "/readyz",
    what: str = "the server",
) -> float:
    """Polls GET http://127.0.0.1:<port><path> until it answers 200; returns the seconds waited.
    Raises Failure when `timeout` is up, or at once when `alive()` (if given) turns False."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        if status_of(port, path, timeout=1.0) == 200:
            return time.monotonic() - t0
        if alive is not None and not alive():
            raise Failure(f"{what} exited before {path} answered 200")
        if time.monotonic() >= deadline:
            raise Failure(f"{what} did not answer {path} 200 on :{port} within {timeout:g} s")
        time.sleep(interval)


def item_body(name: str, i: int = 1) -> dict:
    return {
        "name": name,
        "description": "benchmark item",
        "price": 19.99,
        "quantity": i % 1000,
        "tags": ["bench", "kitchen"],
    }


# --------------------------------------------------------------------------------------------
# The service


class Service:
    """One `shipshape serve` process on 127.0.0.1:<port>, optionally pinned to a CPU."""

    def __init__(
        self,
        binary: pathlib.Path,
        db_url: str,
        workdir: pathlib.Path,
        env: dict | None = None,
        cpu: int | None = None,
        port: int | None = None,
        name: str = "server",
    ):
        self.binary = binary
        self.db_url = db_url
        self.workdir = workdir
        self.extra_env = dict(env or {})
        self.cpu = cpu
        self.port = port or free_port()
        self.name = name
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_after_s: float | None = None
        self.starts = 0

    def env(self) -> dict:
        e = {
            "SHIPSHAPE_HTTP__LISTEN": f"127.0.0.1:{self.port}",
            "SHIPSHAPE_DATABASE__URL": self.db_url,
        }
        e.update(self.extra_env)
        return clean_env(e)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Service":
        cpu = self.cpu

        def pin():
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        self.starts += 1
        log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [str(self.binary), "serve"],
            cwd=self.workdir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0, interval: float = 0.002) -> float:
        """Polls /readyz until 200; returns seconds from exec to the first 200."""
        try:
            wait_ready(self.port, timeout, interval, alive=self.alive, what=self.name)
        except Failure as e:
            code = f" ({self.proc.returncode})" if not self.alive() else ""
            raise Failure(f"{e}{code}:\n{self.tail()}") from None
        self.ready_after_s = time.monotonic() - self.started_at
        return self.ready_after_s

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int | None:
        """Exit code, or None if it did not exit in time (then it is killed)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def stop(self, timeout: float = 30.0) -> int | None:
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_kb(self) -> int:
        return status_kb(self.pid, "VmRSS")

    def hwm_kb(self) -> int:
        return status_kb(self.pid, "VmHWM")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_lines(self):
        """Parsed JSON log lines (non-JSON lines are skipped)."""
        with open(self.log_path, errors="replace") as f:
            for line in f:
                if line.startswith("{"):
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue

    def metrics(self) -> str:
        return request(self.port, "GET", "/metrics")[2].decode()


def requests_total(metrics_text: str, exclude_routes=("/metrics",)) -> int:
    """Sum of http_server_requests_total over all series, minus the excluded routes."""
    total = 0
    for line in metrics_text.splitlines():
        if line.startswith("http_server_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            if any(f'route="{r}"' in labels for r in exclude_routes):
                continue
            total += int(float(value))
    return total


# --------------------------------------------------------------------------------------------
# The peers (../shared/peers, read-only): the seed service (FastAPI) and the bare axum floor,
# measured side by side with shipshape by `bench.py --peers`.


def shared_dir() -> pathlib.Path:
    """shared/: $SHIPSHAPE_SHARED_DIR (.ci/lib.sh exports it), else beside the checkout."""
    return pathlib.Path(os.environ.get("SHIPSHAPE_SHARED_DIR") or ROOT.parent / "shared")


def ci_cache() -> pathlib.Path:
    """The build and tool cache of .ci/lib.sh ($SHIPSHAPE_CI_CACHE, else ~/.cache/shipshape-ci)."""
    return pathlib.Path(os.environ.get("SHIPSHAPE_CI_CACHE") or pathlib.Path.home() / ".cache" / "shipshape-ci")


# name: (directory under peers/, health route, item collection, what its first start prepares)
PEERS = {
    "seed": ("seed-fastapi", "/health", "/items", "venv"),
    "floor": ("floor", "/health", "/items", "release build"),
}


class Peer:
    """One peer started through its own run.sh (`bash run.sh PORT`, which execs the server, so
    the process we start is the server), optionally pinned to a CPU. Its first start builds the
    floor (cargo, into <ci cache>/floor-target) or makes the seed's venv (pip, <ci cache>/seed-venv):
    `prepare()` does that unpinned and outside any measurement. The seed's per-request JSON log
    goes to /dev/null, as peers/README.md says to do when benchmarking; stderr to a log file."""

    def __init__(self, name: str, workdir: pathlib.Path, cpu: int | None = None, port: int | None = None):
        sub, self.health_path, self.items_path, self.first_start = PEERS[name]
        self.name = name
        self.dir = shared_dir() / "peers" / sub
        self.script = self.dir / "run.sh"
        if not self.script.exists():
            raise Failure(f"peer {name}: {self.script} not found (set SHIPSHAPE_SHARED_DIR to the shared/ directory)")
        self.workdir = workdir
        self.cpu = cpu
        self.port = port or free_port()
        self.log_path = workdir / f"peer-{name}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        cache = ci_cache()
        e = clean_env({
            "CARGO_TARGET_DIR": str(cache / "floor-target"),
            "SEED_VENV": str(cache / "seed-venv"),
            # peers/ is read-only: no __pycache__ written into it.
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        for k in ("CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "PIP_INDEX_URL", "XDG_CACHE_HOME"):
            if k in os.environ:
                e[k] = os.environ[k]
        return e

    def prepared(self) -> bool:
        cache = ci_cache()
        if self.name == "floor":
            return os.access(cache / "floor-target" / "release" / "floor", os.X_OK)
        return os.access(cache / "seed-venv" / "bin" / "uvicorn", os.X_OK)

    def prepare(self, timeout: float = 1200) -> float:
        """First start, unpinned, so run.sh builds/installs; then stop. Returns seconds taken (0
        when there was nothing to do)."""
        if self.prepared():
            return 0.0
        t0 = time.monotonic()
        cpu, self.cpu = self.cpu, None
        try:
            self.start()
            self.wait_ready(timeout=timeout)
        finally:
            self.stop()
            self.cpu = cpu
        if not self.prepared():
            raise Failure(f"peer {self.name}: run.sh served but left no {self.first_start} in {ci_cache()}")
        return time.monotonic() - t0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Peer":
        cpu = self.cpu

        def pin():
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["bash", str(self.script), str(self.port)],
            cwd=self.workdir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=pin,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> float:
        try:
            return wait_ready(self.port, timeout, 0.02, alive=self.alive, path=self.health_path, what=f"peer {self.name}")
        except Failure as e:
            raise Failure(f"{e}:\n{self.tail()}") from None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to the server and its tree; exit code (the floor has no signal handler: -15)."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        pids = process_tree(self.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in process_tree(self.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.wait()
            return None

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def _tree_kb(self, key: str) -> int:
        total = 0
        for pid in process_tree(self.pid):
            try:
                total += status_kb(pid, key)
            except OSError:
                continue  # exited meanwhile
        return total

    def rss_kb(self) -> int:
        return self._tree_kb("VmRSS")

    def hwm_kb(self) -> int:
        return self._tree_kb("VmHWM")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# --------------------------------------------------------------------------------------------
# A throwaway PostgreSQL cluster we control: stop and start it (the outage experiment), give it
# settings and adopt a restored data directory (the backup drill).


class Postgres:
    """initdb (or `data=`: an existing data directory, e.g. a restored base backup) under a fresh
    directory owned by the server's user; `settings` are appended to postgresql.conf."""

    def __init__(self, fsync: bool = True, cpu: int | None = None, settings: dict | None = None,
                 data: pathlib.Path | None = None):
        if not (PG_BIN / "initdb").exists():
            raise SystemExit(f"PostgreSQL binaries not found in {PG_BIN} (set SHIPSHAPE_PG_BIN)")
        # Not under `workdir`: the postgres user must be able to reach it (mkdtemp dirs are 0700).
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="shipshape-pg."))
        self.data = pathlib.Path(data) if data else self.dir / "data"
        self.port = free_port()
        self.fsync = fsync
        self.cpu = cpu
        self.user_prefix: list[str] = []
        self.user = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            self.user = "postgres"
            shutil.chown(self.dir, "postgres")
            self.user_prefix = ["runuser", "-u", "postgres", "--"]
        self.dir.chmod(0o700)
        if data:
            self.own(self.data)
            self.data.chmod(0o700)
        else:
            self._run(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres"])
        if settings:
            with open(self.data / "postgresql.conf", "a") as f:
                f.write("\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))

    def own(self, path: pathlib.Path) -> pathlib.Path:
        """Hands `path` (recursively) to the server's user; returns it."""
        if self.user:
            subprocess.run(["chown", "-R", self.user, str(path)], check=True)
        return path

    def mkdir(self, name: str) -> pathlib.Path:
        """A directory in this cluster's directory that the server can write (WAL archive, backups)."""
        d = self.dir / name
        d.mkdir()
        return self.own(d)

    def run(self, args: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A PostgreSQL program (initdb, psql, pg_basebackup, ...) as the server's user."""
        return self._run(args, check, timeout)

    def _run(self, args: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        args = [str(PG_BIN / args[0])] + args[1:]
        return subprocess.run(
            self.user_prefix + args,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            preexec_fn=(lambda: os.sched_setaffinity(0, {self.cpu})) if self.cpu is not None else None,
        )

    def start(self) -> "Postgres":
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        if not self.fsync:
            opts += " -c fsync=off"
        self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start"], timeout=90)
        return self

    @property
    def log(self) -> pathlib.Path:
        return self.dir / "log"

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"], check=False, timeout=40)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def url(self, db: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        self._run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-qc", f"CREATE DATABASE {name}"])
        return self.url(name)

    def psql(self, db: str, sql: str) -> str:
        return self._run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-Atqc", sql]
        ).stdout

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.data.parent != self.dir:
            shutil.rmtree(self.data, ignore_errors=True)


def postgres_available() -> bool:
    return (PG_BIN / "initdb").exists()
