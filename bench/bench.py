#!/usr/bin/env python3
"""shipshape load-test harness (run through bench/run.sh, which builds and installs the tools).

For each backend (SQLite always, PostgreSQL when its binaries are installed) it starts the
release binary on 127.0.0.1 pinned to CPU 0, drives it from CPU 1 with wrk (closed loop, Lua
script bench/lua/shipshape.lua) and oha (open loop, fixed rate), and records per scenario:
requests/s, latency p50/p95/p99/max, errors, the server's CPU microseconds per request
(utime+stime from /proc/<pid>/stat over the requests served) and its peak RSS (VmHWM, reset
before each scenario). Separately: time from exec to the first /readyz 200 on an empty
database, and idle RSS. Results go to bench/results/<stamp>.json plus a Markdown summary.

With --peers (issue 14) it measures shipshape side by side with the peers in ../shared/peers
instead: the seed service (FastAPI, the one we replace) and the floor (bare axum, in memory),
started through their own run.sh, and shipshape as shipped (kustomize/base/shipshape.toml, auth
on, rate limiting off) on SQLite and PostgreSQL, each with telemetry as shipped and off. All run
at once on CPU 0; wrk on CPU 1 loads one at a time, in interleaved rounds; the ratio table goes
to bench/results/peers-<stamp>.{json,md}. See run_peers() and docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "lib"))
import harness as h  # noqa: E402

BENCH = pathlib.Path(__file__).resolve().parent
LUA = BENCH / "lua" / "shipshape.lua"
SERVER_CPU, GENERATOR_CPU = 0, 1

# Issue 6 targets (SQLite, 2 cores, telemetry/JSON logs/auth on).
TARGETS = {
    "read_cpu_us": 30.0,
    "read_rps": 30000.0,
    "write_cpu_us": 60.0,
    "health_cpu_us": 12.0,
    "fixed_p99_ms": 2.0,
    "idle_rss_mb": 20.0,
    "load_rss_mb": 64.0,
    "startup_ms": 200.0,
}

SCENARIOS = {
    # name: (wrk mode, extra env, description)
    "health": ("health", {}, "GET /healthz"),
    "write": ("post", {}, "POST /v1/items (valid body, full validation, durable commit)"),
    "read": ("get", {}, "GET /v1/items/{id} (random id among the stored items)"),
    "mixed": ("mix", {"BENCH_GET_PCT": "90"}, "90% GET /v1/items/{id}, 10% POST /v1/items, chosen per request"),
    "list": ("list", {}, "GET /v1/items?limit=20&cursor=<random page>"),
}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def machine_info() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    busy = subprocess.run(
        ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"], capture_output=True, text=True
    ).stdout.splitlines()[:6]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "busiest_processes_at_start": [b.strip() for b in busy],
    }


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "missing"


# --------------------------------------------------------------------------------------------
# Load generators


def run_wrk(port: int, mode: str, seconds: float, conns: int, env: dict) -> dict:
    e = dict(os.environ)
    e.update(env)
    e["BENCH_MODE"] = mode
    cmd = [
        "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
        "-s", str(LUA), f"http://127.0.0.1:{port}",
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, env=e, preexec_fn=pinned(GENERATOR_CPU), timeout=seconds + 60
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[len("WRKJSON "):])
            r["cmd"] = " ".join(cmd)
            return r
    raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()} {out.stdout[-500:]}")


def wrk_summary(r: dict) -> dict:
    secs = r["duration_us"] / 1e6
    lat = r["latency_us"]
    errors = sum(r["errors"].values())
    return {
        "generator": "wrk",
        "requests": r["requests"],
        "seconds": round(secs, 3),
        "rps": round(r["requests"] / secs, 1),
        "p50_ms": lat["p50"] / 1000,
        "p95_ms": lat["p95"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "errors": errors,
        "error_detail": r["errors"],
        "command": r["cmd"],
    }


def run_oha_fixed(port: int, rate: int, seconds: float, conns: int, urls_file: pathlib.Path, headers: dict) -> dict:
    cmd = [
        "oha", "--no-tui", "--output-format", "json", "-z", f"{max(1, round(seconds))}s",
        "-q", str(rate), "--latency-correction", "-c", str(conns), "--urls-from-file",
        "-H", "User-Agent: shipshape-bench-fixed",
    ]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(str(urls_file))
    out = subprocess.run(
        cmd, capture_output=True, text=True, preexec_fn=pinned(GENERATOR_CPU), timeout=seconds + 60
    )
    try:
        r = json.loads(out.stdout)
    except ValueError:
        raise RuntimeError(f"oha failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    codes = {int(k): v for k, v in r.get("statusCodeDistribution", {}).items()}
    total = sum(codes.values())
    bad = sum(v for k, v in codes.items() if not 200 <= k < 400)
    errs = r.get("errorDistribution", {})
    # oha cancels what is still in flight when the duration ends; that is not a server error.
    errs = {k: v for k, v in errs.items() if "deadline" not in k.lower()}
    pct = r["latencyPercentiles"]
    shown = [c for c in cmd]
    if headers:
        shown = [("-H" if c == "-H" else ("Authorization: Bearer <token>" if c.startswith("Authorization") else c)) for c in shown]
    return {
        "generator": "oha",
        "requests": total,
        "seconds": round(r["summary"]["total"], 3),
        "rps": round(total / r["summary"]["total"], 1),
        "target_rps": rate,
        "p50_ms": pct["p50"] * 1000,
        "p95_ms": pct["p95"] * 1000,
        "p99_ms": pct["p99"] * 1000,
        "p999_ms": pct.get("p99.9", 0) * 1000,
        "max_ms": r["summary"]["slowest"] * 1000,
        "errors": bad + sum(errs.values()),
        "error_detail": {"non_2xx": bad, **errs},
        "command": " ".join(shown),
    }


# --------------------------------------------------------------------------------------------


def measured(svc: h.Service, pg: h.Postgres | None, fn) -> dict:
    """Runs fn() and adds the server's CPU us/request and peak RSS over that run."""
    hwm_reset = h.reset_peak_rss(svc.pid)
    counted = hasattr(svc, "metrics")  # shipshape counts what it served; the peers' counters differ
    served0 = h.requests_total(svc.metrics()) if counted else 0
    cpu0 = svc.cpu_seconds()
    pg0 = h.tree_cpu_seconds(pg.postmaster_pid()) if pg else 0.0
    r = fn()
    cpu1 = svc.cpu_seconds()
    pg1 = h.tree_cpu_seconds(pg.postmaster_pid()) if pg else 0.0
    served = h.requests_total(svc.metrics()) - served0 if counted else None
    n = max(1, r["requests"])
    r["server_cpu_s"] = round(cpu1 - cpu0, 3)
    r["cpu_us_per_req"] = round((cpu1 - cpu0) * 1e6 / n, 1)
    if counted:
        r["server_counted_requests"] = served
    if pg:
        r["pg_cpu_us_per_req"] = round((pg1 - pg0) * 1e6 / n, 1)
    r["peak_rss_mb"] = round(svc.hwm_kb() / 1024, 1)
    r["peak_rss_is_lifetime"] = not hwm_reset
    if not svc.alive():
        raise h.Failure(f"the server died during the run:\n{svc.tail()}")
    return r


def collect_ids_and_cursors(port: int, headers: dict, max_ids: int = 20000) -> tuple[list[str], list[str]]:
    ids, cursors, cursor = [], [""], ""
    while len(ids) < max_ids:
        path = "/v1/items?limit=100" + (f"&cursor={cursor}" if cursor else "")
        status, _, body = h.request(port, "GET", path, headers=headers, timeout=10)
        if status != 200:
            raise h.Failure(f"listing items: {status} {body[:200]!r}")
        page = json.loads(body)
        ids += [i["id"] for i in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
        cursors.append(cursor)
    return ids, cursors


def seed(port: int, headers: dict, n: int) -> None:
    for i in range(n):
        status, _, body = h.request(port, "POST", "/v1/items", h.item_body(f"seed {i}", i), headers=headers)
        if status != 201:
            raise h.Failure(f"seeding: {status} {body[:200]!r}")


def startup_runs(binary, auth: h.Auth, runs: int, pg: h.Postgres | None, workroot: pathlib.Path) -> dict:
    """exec -> first /readyz 200 on an empty database; idle RSS 1 s after ready."""
    times, idle = [], []
    for i in range(runs):
        d = pathlib.Path(tempfile.mkdtemp(prefix="startup.", dir=workroot))
        url = pg.create_database(f"startup_{i}_{os.getpid()}") if pg else f"sqlite://{d}/data/shipshape.db"
        svc = h.Service(binary, url, d, env=auth.env, cpu=SERVER_CPU, name="startup").start()
        try:
            times.append(svc.wait_ready(timeout=30, interval=0.001) * 1000)
            time.sleep(1.0)
            idle.append(svc.rss_kb() / 1024)
        finally:
            svc.stop(timeout=30)
    return {
        "runs": runs,
        "ready_ms_median": round(statistics.median(times), 1),
        "ready_ms_all": [round(t, 1) for t in times],
        "idle_rss_mb_median": round(statistics.median(idle), 1),
        "idle_rss_mb_all": [round(x, 1) for x in idle],
    }


def run_backend(backend: str, binary, feats, args, workroot: pathlib.Path) -> dict:
    pg = None
    wd = pathlib.Path(tempfile.mkdtemp(prefix=f"{backend}.", dir=workroot))
    auth = h.setup_auth(binary, wd, feats)
    try:
        if backend == "postgres":
            pg = h.Postgres(fsync=True, cpu=SERVER_CPU).start()
            url = pg.create_database("bench")
        else:
            url = f"sqlite://{wd}/data/shipshape.db"
        out: dict = {"backend": backend, "auth": auth.notes, "scenarios": {}}
        log(f"{backend}: start-up on an empty database x{args.startup_runs}")
        out["startup"] = startup_runs(binary, auth, args.startup_runs, pg, workroot)
        log(f"{backend}: {out['startup']}")

        env = {"SHIPSHAPE_LOG__FORMAT": "json", "SHIPSHAPE_LOG__LEVEL": "info"}
        env.update(auth.env)
        sink = None
        if feats.telemetry and not args.no_telemetry:
            sink = h.OtlpSink(wd, cpu=GENERATOR_CPU)
            env.update(sink.env())
            out["auth"].append("telemetry on (OTLP/HTTP span export to a local sink)")
        else:
            out["auth"].append("telemetry: no span export" + (" (--no-telemetry)" if feats.telemetry else " in this binary"))
        env.update(dict(kv.split("=", 1) for kv in args.env))
        out["server_env"] = {k: v for k, v in env.items() if "SECRET" not in k}
        svc = h.Service(binary, url, wd, env=env, cpu=SERVER_CPU, name=f"bench-{backend}").start()
        try:
            svc.wait_ready()
            time.sleep(1.0)
            out["idle_rss_mb"] = round(svc.rss_kb() / 1024, 1)
            seed(svc.port, auth.headers(), 200)
            files = wd / "files"
            files.mkdir()
            wenv = {"BENCH_TOKEN": auth.token or ""}

            def refresh_files():
                ids, cursors = collect_ids_and_cursors(svc.port, auth.headers())
                (files / "ids").write_text("\n".join(ids) + "\n")
                (files / "cursors").write_text("\n".join(cursors) + "\n")
                (files / "urls").write_text("".join(f"http://127.0.0.1:{svc.port}/v1/items/{i}\n" for i in ids))

            refresh_files()

            def scenario(name: str, refresh_ids: bool = False):
                mode, extra, desc = SCENARIOS[name]
                if refresh_ids:
                    refresh_files()  # the write scenario added items: read among all of them
                e = dict(wenv, BENCH_IDS=str(files / "ids"), BENCH_CURSORS=str(files / "cursors"), **extra)
                if args.warmup > 0:
                    run_wrk(svc.port, mode, args.warmup, args.connections, e)
                r = measured(svc, pg, lambda: wrk_summary(run_wrk(svc.port, mode, args.duration, args.connections, e)))
                r["description"] = desc
                r["connections"] = args.connections
                out["scenarios"][name] = r
                log(f"{backend} {name}: {brief(r)}")

            wanted = args.scenarios.split(",")
            for name in ("health", "write", "read", "mixed", "list"):
                if name in wanted:
                    scenario(name, refresh_ids=(name == "read"))
            if "fixed_rate" not in wanted:
                pass
            elif shutil.which("oha"):
                urls = files / "urls"
                if args.warmup > 0:
                    run_oha_fixed(svc.port, args.rate, args.warmup, args.fixed_connections, urls, auth.headers())
                r = measured(
                    svc, pg,
                    lambda: run_oha_fixed(svc.port, args.rate, args.duration, args.fixed_connections, urls, auth.headers()),
                )
                r["description"] = f"GET /v1/items/{{id}} at a fixed {args.rate} req/s (open loop, latency corrected)"
                r["connections"] = args.fixed_connections
                out["scenarios"]["fixed_rate"] = r
                log(f"{backend} fixed_rate: {brief(r)}")
            else:
                out["scenarios"]["fixed_rate"] = {"skipped": "oha not installed"}
        finally:
            out["exit_code"] = svc.stop(timeout=60)
            if sink:
                out["otlp_sink"] = sink.stop()
            out["log_bytes"] = svc.log_path.stat().st_size if svc.log_path.exists() else 0
        return out
    finally:
        if pg:
            pg.destroy()


# --------------------------------------------------------------------------------------------
# Side by side with the peers (issue 14): `bench.py --peers`, through `bench/run.sh --peers`.
#
# Every server runs at once, pinned to CPU 0 and idle unless loaded; wrk (CPU 1) loads one at a
# time. A round is every scenario on every server in turn (per scenario: seed, floor, then the
# shipshape variants), and rounds repeat, so this VM's drift over minutes hits every server
# alike. Per slot: requests/s and the server's CPU per request (its process tree's
# utime+stime+cutime+cstime from /proc over the requests wrk saw answered). Per scenario and
# server: the median over rounds and the min-max spread; the ratios are the median over rounds
# of the ratio measured within the round.

SHIPPED_CONFIG = h.ROOT / "kustomize" / "base" / "shipshape.toml"  # the ConfigMap's file
PEER_SERVERS = {
    # name: (kind, backend, telemetry as shipped?, label)
    "seed": ("peer", None, None, "seed (FastAPI)"),
    "floor": ("peer", None, None, "floor (bare axum)"),
    "sqlite": ("shipshape", "sqlite", True, "shipshape SQLite, as shipped"),
    "sqlite-off": ("shipshape", "sqlite", False, "shipshape SQLite, telemetry off"),
    "postgres": ("shipshape", "postgres", True, "shipshape PostgreSQL, as shipped"),
    "postgres-off": ("shipshape", "postgres", False, "shipshape PostgreSQL, telemetry off"),
}
PEER_SCENARIOS = {
    # name: (label, servers it runs on)
    "health": ("health: `GET /health` (peers), `GET /healthz`", None),
    "write": ("create: `POST /items` (peers), `POST /v1/items`", None),
    "read": ("GET by id (random stored id)", None),
    "list": ("list page of 20: `GET /v1/items?limit=20&cursor=...`", "shipshape"),
    "mixed": ("90% GET by id, 10% create", None),
}

PEER_SCENARIO_ROUTES = {
    # name: (row label in the table, the routes, for the line above the table)
    "health": ("health", "`GET /health` (peers), `GET /healthz` (shipshape)"),
    "write": ("create", "`POST /items`, `POST /v1/items`"),
    "read": ("GET by id", "`GET /items/{id}`, `GET /v1/items/{id}`, a random stored id"),
    "list": ("list 20", "`GET /v1/items?limit=20&cursor=...`, shipshape only (the peers have no list)"),
    "mixed": ("mixed", "90% GET by id, 10% create"),
}

def shipped_sample_ratio() -> float:
    """telemetry.sample_ratio of the shipped config (the service exports every trace without it)."""
    import tomllib

    return float(tomllib.loads(SHIPPED_CONFIG.read_text()).get("telemetry", {}).get("sample_ratio", 1.0))


class Target:
    """One server of the side-by-side run: a peer or a shipshape variant, and what wrk needs."""

    def __init__(self, name: str, proc, kind: str, health_path: str, items_path: str, token: str,
                 pg: h.Postgres | None, files: pathlib.Path):
        self.name, self.proc, self.kind = name, proc, kind
        self.label = PEER_SERVERS[name][3]
        self.health_path, self.items_path, self.token, self.pg = health_path, items_path, token, pg
        self.files = files
        self.info: dict = {"label": self.label, "kind": kind}

    @property
    def port(self) -> int:
        return self.proc.port

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def wrk_env(self, extra: dict) -> dict:
        return dict(
            BENCH_TOKEN=self.token, BENCH_IDS=str(self.files / "ids"), BENCH_CURSORS=str(self.files / "cursors"),
            BENCH_ITEMS_PATH=self.items_path, BENCH_HEALTH_PATH=self.health_path, **extra,
        )

    def runs(self, scenario: str) -> bool:
        only = PEER_SCENARIOS[scenario][1]
        return only is None or only == self.kind

    def seed_items(self, n: int) -> None:
        """n items through the API; ids (and, for shipshape, list cursors) for wrk and oha."""
        self.files.mkdir(parents=True, exist_ok=True)
        if self.kind == "shipshape":
            seed(self.port, self.headers(), n)
            ids, cursors = collect_ids_and_cursors(self.port, self.headers())
        else:
            ids, cursors = [], [""]
            for i in range(n):
                status, _, body = h.request(self.port, "POST", self.items_path, h.item_body(f"seed {i}", i))
                if status != 201:
                    raise h.Failure(f"{self.name}: seeding: {status} {body[:200]!r}")
                ids.append(str(json.loads(body)["id"]))
        (self.files / "ids").write_text("\n".join(ids) + "\n")
        (self.files / "cursors").write_text("\n".join(cursors) + "\n")
        (self.files / "urls").write_text("".join(f"http://127.0.0.1:{self.port}{self.items_path}/{i}\n" for i in ids))
        self.info["seeded_items"] = len(ids)


def start_targets(names: list[str], binary, feats, args, wd: pathlib.Path, stack: list) -> list[Target]:
    """Starts every server (each appended to `stack` at once, for the caller to stop)."""
    targets = []
    auth = h.setup_auth(binary, wd, feats)
    pg = sink = None
    if any(PEER_SERVERS[n][1] == "postgres" for n in names):
        pg = h.Postgres(fsync=True, cpu=SERVER_CPU).start()
        stack.append(pg)
    if feats.telemetry and any(PEER_SERVERS[n][2] for n in names):
        sink = h.OtlpSink(wd, cpu=GENERATOR_CPU)
        stack.append(sink)
    for name in names:
        kind, backend, shipped, _ = PEER_SERVERS[name]
        d = wd / name
        d.mkdir()
        if kind == "peer":
            peer = h.Peer(name, d, cpu=SERVER_CPU)
            took = peer.prepare()
            if took:
                log(f"{name}: first start ({peer.first_start}) took {took:.0f} s (cached in {h.ci_cache()})")
            stack.append(peer.start())
            t = Target(name, peer, kind, peer.health_path, peer.items_path, "", None, d / "files")
            t.info["command"] = f"bash {peer.script} PORT (stdout to /dev/null)"
            t.info["short"] = ("its run.sh: 1 uvicorn worker, JSON request log to /dev/null, in-memory dict"
                               if name == "seed" else "its run.sh: in memory, no logs, metrics, validation or auth")
        else:
            # As shipped: the ConfigMap's shipshape.toml (JSON logs at info, 5% of traces
            # exported once an OTLP endpoint is set, durable SQLite by default), auth on with a
            # bearer token, rate limiting off (one client address would be limited).
            env = {"SHIPSHAPE_CONFIG": str(SHIPPED_CONFIG), **auth.env}
            notes = list(auth.notes) + [f"config {SHIPPED_CONFIG.relative_to(h.ROOT)}"]
            ratio = shipped_sample_ratio()
            if shipped and sink:
                env.update(sink.env())
                short = f"JSON logs at info, {ratio * 100:g}% of traces exported (OTLP/HTTP to a local sink)"
            elif shipped:
                short = "JSON logs at info; no span export in this binary"
            else:
                env["SHIPSHAPE_LOG__LEVEL"] = "warn"
                short = "no span export, log.level=warn (metrics stay on)"
            notes.append(("telemetry as shipped: " if shipped else "telemetry off: ") + short)
            env.update(dict(kv.split("=", 1) for kv in args.env))
            url = pg.create_database(f"bench_{name.replace('-', '_')}") if backend == "postgres" else f"sqlite://{d}/data/shipshape.db"
            svc = h.Service(binary, url, d, env=env, cpu=SERVER_CPU, name=name).start()
            stack.append(svc)
            t = Target(name, svc, kind, "/healthz", "/v1/items", auth.token or "", pg if backend == "postgres" else None, d / "files")
            t.info["config"] = notes
            t.info["short"] = short
            t.info["server_env"] = {k: v for k, v in env.items() if "SECRET" not in k}
        targets.append(t)
    for t in targets:
        t.proc.wait_ready()
    time.sleep(1.0)
    for t in targets:
        t.info["idle_rss_mb"] = round(t.proc.rss_kb() / 1024, 1)
    for t in targets:
        t.seed_items(args.seed_items)
    return targets


def stop_all(stack: list) -> dict:
    """Stops everything started, servers first and at the same time (shipshape drains for the
    shipped http.drain_delay). Returns exit codes by server name."""
    codes = {}
    services = [x for x in stack if isinstance(x, h.Service)]
    for svc in services:
        svc.signal(signal.SIGTERM)
    for x in stack:
        if isinstance(x, h.Peer):
            codes[x.name] = x.stop()
    for svc in services:
        codes[svc.name] = svc.wait_exit(60)
    for x in reversed(stack):
        if isinstance(x, h.OtlpSink):
            codes["otlp_sink"] = x.stop()
        elif isinstance(x, h.Postgres):
            x.destroy()
    return codes


def run_peers(binary, feats, args, workroot: pathlib.Path) -> dict:
    names = [n for n in args.servers.split(",") if n]
    unknown = [n for n in names if n not in PEER_SERVERS]
    if unknown:
        raise h.Failure(f"unknown servers {unknown}; have {', '.join(PEER_SERVERS)}")
    if not h.postgres_available() and any(PEER_SERVERS[n][1] == "postgres" for n in names):
        log("PostgreSQL binaries not installed: the PostgreSQL variants are left out")
        names = [n for n in names if PEER_SERVERS[n][1] != "postgres"]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in PEER_SCENARIOS and s != "fixed_rate":
            raise h.Failure(f"unknown scenario {s}; have {', '.join(PEER_SCENARIOS)},fixed_rate")
    wd = pathlib.Path(tempfile.mkdtemp(prefix="peers.", dir=workroot))
    stack: list = []
    out: dict = {"servers": {}, "rounds": [], "fixed_rate": {}}
    failed: list[str] = []
    try:
        targets = start_targets(names, binary, feats, args, wd, stack)
        log("started: " + ", ".join(f"{t.name} :{t.port}" for t in targets))
        for rnd in range(args.rounds):
            this: dict = {}
            for scen in (s for s in PEER_SCENARIOS if s in scenarios):
                mode = SCENARIOS[scen][0]
                extra = SCENARIOS[scen][1]
                for t in targets:
                    if not t.runs(scen):
                        continue
                    e = t.wrk_env(extra)
                    if args.warmup > 0:
                        run_wrk(t.port, mode, args.warmup, args.connections, e)
                    r = measured(t.proc, t.pg, lambda: wrk_summary(run_wrk(t.port, mode, args.duration, args.connections, e)))
                    r["connections"] = args.connections
                    this.setdefault(scen, {})[t.name] = r
                    log(f"round {rnd + 1} {scen} {t.name}: {brief(r)}")
                    if r["errors"] or not r["requests"]:
                        failed.append(f"round {rnd + 1} {scen} {t.name}: {r['requests']} requests, {r['errors']} errors {r['error_detail']}")
            out["rounds"].append(this)
        if "fixed_rate" in scenarios:
            if not shutil.which("oha"):
                out["fixed_rate"] = {"skipped": "oha not installed"}
            for t in targets if shutil.which("oha") else []:
                urls = t.files / "urls"
                if args.warmup > 0:
                    run_oha_fixed(t.port, args.rate, args.warmup, args.fixed_connections, urls, t.headers())
                r = measured(t.proc, t.pg, lambda: run_oha_fixed(t.port, args.rate, args.duration, args.fixed_connections, urls, t.headers()))
                r["connections"] = args.fixed_connections
                out["fixed_rate"][t.name] = r
                log(f"fixed {args.rate}/s {t.name}: {brief(r)}")
                if r["errors"] or not r["requests"]:
                    failed.append(f"fixed_rate {t.name}: {r['requests']} requests, {r['errors']} errors {r['error_detail']}")
        for t in targets:
            out["servers"][t.name] = t.info
    finally:
        codes = stop_all(stack)
        shutil.rmtree(wd, ignore_errors=True)
    out["otlp_sink"] = codes.pop("otlp_sink", None)
    for name, code in codes.items():
        out["servers"].setdefault(name, {})["exit_code"] = code
        if code is None:
            failed.append(f"{name}: did not stop within its timeout after SIGTERM")
        elif PEER_SERVERS[name][0] == "shipshape" and code != 0:
            failed.append(f"{name}: exit code {code} after SIGTERM")
    out["summary"] = peers_summary(out, names)
    for scen, rows in out["summary"].items():
        for name, row in rows.items():
            if PEER_SERVERS[name][0] == "shipshape":
                for key, peer in (("cpu_vs_floor", "floor"), ("rps_vs_seed", "seed")):
                    if peer in names and PEER_SCENARIOS[scen][1] is None and row.get(key) is None:
                        failed.append(f"{scen} {name}: no {key} ratio")
    out["failed"] = failed
    return out


def _spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "all": [round(v, 1) for v in values]}


def peers_summary(out: dict, names: list[str]) -> dict:
    """Per scenario and server: medians and spreads over rounds, and the ratios, each the median
    over rounds of the ratio within the round."""
    summary: dict = {}
    for scen in PEER_SCENARIOS:
        per = [rnd[scen] for rnd in out["rounds"] if scen in rnd]
        if not per:
            continue
        rows = {}
        for name in names:
            got = [p[name] for p in per if name in p]
            if not got:
                continue
            row = {
                "rps": _spread([r["rps"] for r in got]),
                "cpu_us_per_req": _spread([r["cpu_us_per_req"] for r in got]),
                "errors": sum(r["errors"] for r in got),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in got),
            }
            if all("pg_cpu_us_per_req" in r for r in got):
                row["pg_cpu_us_per_req"] = _spread([r["pg_cpu_us_per_req"] for r in got])

            def ratio(peer, f):
                vals = [f(p[name]) / f(p[peer]) for p in per if name in p and peer in p and f(p[peer]) > 0]
                return round(statistics.median(vals), 2) if vals else None

            row["cpu_vs_floor"] = ratio("floor", lambda r: r["cpu_us_per_req"])
            if "pg_cpu_us_per_req" in row:
                row["cpu_with_pg_vs_floor"] = ratio(
                    "floor", lambda r: r["cpu_us_per_req"] + r.get("pg_cpu_us_per_req", 0))
            row["rps_vs_seed"] = ratio("seed", lambda r: r["rps"])
            rows[name] = row
        summary[scen] = rows
    return summary


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def _cell(sp: dict) -> str:
    if sp["min"] == sp["max"]:
        return _fmt(sp["median"])
    return f"{_fmt(sp['median'])} ({_fmt(sp['min'])}-{_fmt(sp['max'])})"


PASTE_BEGIN = "<!-- bench/run.sh --peers: from here to the end marker is the block docs/performance.md#side-by-side-with-the-peers quotes -->"
PASTE_END = "<!-- end of the bench/run.sh --peers block -->"


def peers_markdown(results: dict) -> str:
    """The run's report: a heading, then the block docs/performance.md quotes verbatim between
    PASTE_BEGIN and PASTE_END (what ran, the ratio table, memory and the fixed rate), then any
    failures. bench.py prints it, so a rerun's table is pasted, not retyped."""
    m, p = results["meta"], results["peers"]
    rounds = m["rounds"]
    how = f"median of {rounds} rounds (min-max)" if rounds > 1 else "1 round"
    day = f"{m['stamp'][:4]}-{m['stamp'][4:6]}-{m['stamp'][6:8]}"
    lines = [
        f"# shipshape and its peers, side by side ({m['stamp']})",
        "",
        PASTE_BEGIN,
        "",
        f"`{m['command']}` on {day}, commit `{m['git_commit']}`, binary `{m['binary_version']}`, {m['binary_profile']} build; "
        f"wrk, {m['connections']} connections, {m['duration_s']:g} s per scenario after {m['warmup_s']:g} s warm-up, "
        f"{rounds} round{'s' if rounds != 1 else ''} interleaved; server on CPU {SERVER_CPU}, wrk on CPU {GENERATOR_CPU}; "
        f"{m['machine']['cpus']} CPUs ({m['machine']['cpu_model']}); load average "
        f"{' '.join(m['machine']['loadavg_start'])} at start, {' '.join(m.get('loadavg_end', []))} at end.",
        "",
        f"req/s and server CPU µs per request: {how}. CPU vs floor: the server's CPU per request over "
        "the floor's in the same round (median over rounds), in brackets with PostgreSQL's own CPU added. "
        "req/s vs seed: the same for throughput. "
        + "; ".join("{}: {}".format(*PEER_SCENARIO_ROUTES[scen]) for scen in p["summary"]) + ".",
        "",
        "| scenario | server | req/s | CPU µs/req | PostgreSQL µs/req | CPU vs floor | req/s vs seed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for scen, rows in p["summary"].items():
        for name, row in rows.items():
            pgc = _cell(row["pg_cpu_us_per_req"]) if "pg_cpu_us_per_req" in row else ""
            cvf = f"{row['cpu_vs_floor']:.2f}" if row.get("cpu_vs_floor") is not None and name != "floor" else ""
            if row.get("cpu_with_pg_vs_floor") is not None:
                cvf += f" ({row['cpu_with_pg_vs_floor']:.2f})"
            rvs = f"{row['rps_vs_seed']:.2f}" if row.get("rps_vs_seed") is not None and name != "seed" else ""
            errs = f" **{row['errors']} errors**" if row["errors"] else ""
            lines.append(f"| {PEER_SCENARIO_ROUTES[scen][0]} | {PEER_SERVERS[name][3]}{errs} | {_cell(row['rps'])} | "
                         f"{_cell(row['cpu_us_per_req'])} | {pgc} | {cvf} | {rvs} |")
    lines += [
        "",
        f"shipshape: `{m['shipped_config']}` (the ConfigMap's file: JSON logs at info, "
        f"telemetry.sample_ratio {m['shipped_sample_ratio']:g}), auth on (HS256 bearer token on every /v1 request), "
        "rate limiting off (one client address), SQLite durable (WAL, synchronous=FULL) or a local PostgreSQL "
        "(fsync on, pinned to CPU 0 too); every server runs at once, idle unless loaded. "
        f"Fixed rate: oha, open loop, {m['fixed_connections']} connections, GET by id, once per server after the rounds.",
        "",
        f"| server | idle RSS MB | peak RSS MB (closed loop) | fixed {m['fixed_rate']:,} GET/s: served req/s | p99 ms | CPU µs/req | configuration |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, info in p["servers"].items():
        peak = max((rows[name]["peak_rss_mb"] for rows in p["summary"].values() if name in rows), default="")
        fx = p["fixed_rate"].get(name) if isinstance(p["fixed_rate"], dict) else None
        if fx and "rps" in fx:
            cpu = f"{fx['cpu_us_per_req']}" + (f" (+{fx['pg_cpu_us_per_req']} PostgreSQL)" if "pg_cpu_us_per_req" in fx else "")
            fixed = f"{fx['rps']:,.0f} | {fx['p99_ms']:,.1f} | {cpu}"
        else:
            why = p["fixed_rate"].get("skipped", "not run") if isinstance(p["fixed_rate"], dict) else "not run"
            fixed = f"{why} | | "
        conf = info.get("short", "")
        lines.append(f"| {info.get('label', name)} | {info.get('idle_rss_mb', '')} | {peak} | {fixed} | {conf} |")
    lines += ["", PASTE_END]
    if p.get("failed"):
        lines += ["", "Failures:", ""] + [f"- {f}" for f in p["failed"]]
    return "\n".join(lines) + "\n"


def brief(r: dict) -> str:
    return (
        f"{r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} max {r['max_ms']:.1f} ms, "
        f"{r['errors']} errors, {r['cpu_us_per_req']} us CPU/req, peak RSS {r['peak_rss_mb']} MB"
    )


def verdicts(results: dict) -> list[dict]:
    s = results["backends"].get("sqlite")
    if not s:
        return []
    sc = s["scenarios"]
    out = []

    def check(name, value, target, lower_is_better=True, unit=""):
        if value is None:
            out.append({"target": name, "value": None, "goal": target, "met": None})
            return
        met = value <= target if lower_is_better else value >= target
        if lower_is_better:
            off = f"{(value / target - 1) * 100:+.0f}%"
        else:
            off = f"{(value / target - 1) * 100:+.0f}%"
        out.append({"target": name, "value": value, "goal": f"{'<=' if lower_is_better else '>='} {target}{unit}",
                    "met": met, "off_by": off})

    def val(name, key):
        return sc.get(name, {}).get(key)

    check("GET by id: server CPU us/request", val("read", "cpu_us_per_req"), TARGETS["read_cpu_us"], unit=" us")
    check("GET by id: requests/s", val("read", "rps"), TARGETS["read_rps"], lower_is_better=False)
    check("POST: server CPU us/request", val("write", "cpu_us_per_req"), TARGETS["write_cpu_us"], unit=" us")
    check("health: server CPU us/request", val("health", "cpu_us_per_req"), TARGETS["health_cpu_us"], unit=" us")
    fixed = sc.get("fixed_rate", {})
    check(f"p99 at fixed {results['meta']['fixed_rate']} req/s (ms)", fixed.get("p99_ms"), TARGETS["fixed_p99_ms"], unit=" ms")
    check("idle RSS (MB)", s["startup"]["idle_rss_mb_median"], TARGETS["idle_rss_mb"], unit=" MB")
    peak = max((v.get("peak_rss_mb", 0) for v in sc.values() if isinstance(v, dict)), default=None)
    check("peak RSS under load (MB)", peak, TARGETS["load_rss_mb"], unit=" MB")
    check("exec to /readyz 200, empty DB (ms)", s["startup"]["ready_ms_median"], TARGETS["startup_ms"], unit=" ms")
    return out


def markdown(results: dict) -> str:
    m = results["meta"]
    lines = [
        f"# shipshape benchmark {m['stamp']}",
        "",
        f"`{m['command']}` on {m['machine']['cpus']} CPUs ({m['machine']['cpu_model']}), binary {m['binary_version']}, "
        f"{m['duration_s']} s per scenario after {m['warmup_s']} s warm-up, {m['connections']} connections (wrk, closed loop), "
        f"server on CPU {SERVER_CPU}, generator on CPU {GENERATOR_CPU}; load average {' '.join(m['machine']['loadavg_start'])} at start, "
        f"{' '.join(m.get('loadavg_end', []))} at end.",
        "",
        "| backend | scenario | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | server CPU us/req | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b, res in results["backends"].items():
        for name, r in res["scenarios"].items():
            if "skipped" in r:
                lines.append(f"| {b} | {name} | skipped: {r['skipped']} | | | | | | | |")
                continue
            cpu = f"{r['cpu_us_per_req']}" + (f" (+{r['pg_cpu_us_per_req']} PostgreSQL)" if "pg_cpu_us_per_req" in r else "")
            lines.append(
                f"| {b} | {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['max_ms']:.1f} | {r['errors']} | {cpu} | {r['peak_rss_mb']} |"
            )
    lines += ["", "| backend | exec to /readyz 200 (median) | idle RSS (median) | configuration |", "|---|---:|---:|---|"]
    for b, res in results["backends"].items():
        st = res["startup"]
        lines.append(f"| {b} | {st['ready_ms_median']} ms {st['ready_ms_all']} | {st['idle_rss_mb_median']} MB | {'; '.join(res['auth'])} |")
    if results.get("verdicts"):
        lines += ["", "| target (issue 6, SQLite) | goal | measured | met |", "|---|---|---:|---|"]
        for v in results["verdicts"]:
            met = {True: "yes", False: f"NO ({v.get('off_by')})", None: "not measured"}[v["met"]]
            lines.append(f"| {v['target']} | {v['goal']} | {v['value']} | {met} |")
    return "\n".join(lines) + "\n"


def git_commit() -> str:
    out = subprocess.run(["git", "-C", str(h.ROOT), "describe", "--always", "--dirty", "--abbrev=7"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main_peers(args, binary, feats, results: dict) -> int:
    m = results["meta"]
    m.update(mode="peers", rounds=args.rounds, seed_items=args.seed_items, git_commit=git_commit(),
             binary_profile="debug" if binary.parent.name == "debug" else "release",
             shipped_config=str(SHIPPED_CONFIG.relative_to(h.ROOT)), shipped_sample_ratio=shipped_sample_ratio(),
             peers_dir=str(h.shared_dir() / "peers"))
    workroot = pathlib.Path(tempfile.mkdtemp(prefix="shipshape-peers."))
    try:
        results["peers"] = run_peers(binary, feats, args, workroot)
    except (h.Failure, RuntimeError, subprocess.SubprocessError) as e:
        log(f"FAIL peers: {e}")
        return 1
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    m["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    m["busiest_processes_at_end"] = machine_info()["busiest_processes_at_start"]
    outdir = pathlib.Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    tag = ("smoke-" if args.smoke else "") + "peers-"
    jpath = outdir / f"{tag}{m['stamp']}.json"
    jpath.write_text(json.dumps(results, indent=2) + "\n")
    md = peers_markdown(results)
    (outdir / f"{tag}{m['stamp']}.md").write_text(md)
    print(md)
    log(f"results: {jpath} (and .md: the tables docs/performance.md quotes)")
    for f in results["peers"]["failed"]:
        log(f"FAIL {f}")
    return 1 if results["peers"]["failed"] else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="~2 s per scenario, for CI: checks the harness, not the figures "
                    "(with --peers: 1 s per scenario, 1 round)")
    ap.add_argument("--peers", action="store_true",
                    help="side by side with the peers in ../shared/peers (seed, floor) in one run, interleaved rounds, "
                         "ratio table (docs/performance.md#side-by-side-with-the-peers)")
    ap.add_argument("--rounds", type=int, default=None, help="--peers: interleaved rounds (default 3)")
    ap.add_argument("--servers", default=",".join(PEER_SERVERS),
                    help="--peers: comma-separated subset of: " + ",".join(PEER_SERVERS)
                         + " (the PostgreSQL ones only when its binaries are installed)")
    ap.add_argument("--seed-items", type=int, default=None, help="--peers: items stored in each server first (default 1000)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per scenario (default 10; --peers 5)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per scenario (default 3; --peers 1)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--fixed-connections", type=int, default=64)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--startup-runs", type=int, default=5)
    ap.add_argument("--backends", default="auto", help="sqlite,postgres | auto (PostgreSQL when installed)")
    ap.add_argument("--bin", default=None)
    ap.add_argument("--out", default=str(BENCH / "results"))
    ap.add_argument("--scenarios", default=None,
                    help="comma-separated subset of: health,write,read,mixed,list,fixed_rate "
                         "(default all; --peers: health,write,read,list,fixed_rate)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra server environment, e.g. SHIPSHAPE_LOG__LEVEL=warn (for experiments)")
    ap.add_argument("--no-telemetry", action="store_true", help="do not export spans (default: export to a local OTLP sink)")
    ap.add_argument("--command", default="bench/run.sh", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peers:
        defaults = dict(duration=1.0, warmup=0.0, rounds=1, seed_items=100) if args.smoke else \
            dict(duration=5.0, warmup=1.0, rounds=3, seed_items=1000)
        defaults["scenarios"] = "health,write,read,list,fixed_rate"
    else:
        defaults = dict(duration=2.0, warmup=1.0) if args.smoke else dict(duration=10.0, warmup=3.0)
        defaults["scenarios"] = "health,write,read,mixed,list,fixed_rate"
        if args.smoke:
            args.startup_runs = 2
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if os.cpu_count() < 2:
        log("needs 2 CPUs (server on one, generator on the other)")
        return 2
    if not shutil.which("wrk"):
        log("wrk is missing (bench/run.sh installs it)")
        return 2
    binary = h.find_binary(args.bin)
    feats = h.features(binary)
    backends = args.backends.split(",") if args.backends != "auto" else (
        ["sqlite", "postgres"] if h.postgres_available() else ["sqlite"])
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = {
        "meta": {
            "stamp": stamp,
            "command": args.command,
            "smoke": args.smoke,
            "binary": str(binary),
            "binary_version": tool_version([str(binary), "--version"]),
            "wrk": tool_version(["wrk", "--version"]),
            "oha": tool_version(["oha", "--version"]) if shutil.which("oha") else "missing",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "fixed_rate": args.rate,
            "fixed_connections": args.fixed_connections,
            "server_cpu": SERVER_CPU,
            "generator_cpu": GENERATOR_CPU,
            "machine": machine_info(),
            "targets": TARGETS,
        },
        "backends": {},
    }
    if args.peers:
        return main_peers(args, binary, feats, results)
    workroot = pathlib.Path(tempfile.mkdtemp(prefix="shipshape-bench."))
    failed = []
    try:
        for b in backends:
            try:
                results["backends"][b] = run_backend(b, binary, feats, args, workroot)
            except (h.Failure, RuntimeError, subprocess.SubprocessError) as e:
                failed.append(f"{b}: {e}")
                log(f"FAIL {b}: {e}")
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    results["meta"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    results["verdicts"] = verdicts(results) if "sqlite" in results["backends"] else []
    outdir = pathlib.Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    tag = "smoke-" if args.smoke else ""
    jpath = outdir / f"{tag}{stamp}.json"
    jpath.write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (outdir / f"{tag}{stamp}.md").write_text(md)
    print(md)
    log(f"results: {jpath}")
    for b, res in results["backends"].items():
        for name, r in res["scenarios"].items():
            if r.get("errors"):
                failed.append(f"{b} {name}: {r['errors']} errors {r.get('error_detail')}")
        if res.get("exit_code") != 0:
            failed.append(f"{b}: server exit code {res.get('exit_code')} after SIGTERM")
    if failed:
        for f in failed:
            log(f"FAIL {f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
