#!/usr/bin/env python3
"""shipshape load-test harness (run through bench/run.sh, which builds and installs the tools).

For each backend (SQLite always, PostgreSQL when its binaries are installed) it starts the
release binary on 127.0.0.1 pinned to CPU 0, drives it from CPU 1 with wrk (closed loop, Lua
script bench/lua/shipshape.lua) and oha (open loop, fixed rate), and records per scenario:
requests/s, latency p50/p95/p99/max, errors, the server's CPU microseconds per request
(utime+stime from /proc/<pid>/stat over the requests served) and its peak RSS (VmHWM, reset
before each scenario). Separately: time from exec to the first /readyz 200 on an empty
database, and idle RSS. Results go to bench/results/<stamp>.json plus a Markdown summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import shutil
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
    served0 = h.requests_total(svc.metrics())
    cpu0 = svc.cpu_seconds()
    pg0 = h.children_cpu_seconds(pg.postmaster_pid()) if pg else 0.0
    r = fn()
    cpu1 = svc.cpu_seconds()
    pg1 = h.children_cpu_seconds(pg.postmaster_pid()) if pg else 0.0
    served = h.requests_total(svc.metrics()) - served0
    n = max(1, r["requests"])
    r["server_cpu_s"] = round(cpu1 - cpu0, 3)
    r["cpu_us_per_req"] = round((cpu1 - cpu0) * 1e6 / n, 1)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="~2 s per scenario, for CI: checks the harness, not the figures")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--fixed-connections", type=int, default=64)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--startup-runs", type=int, default=5)
    ap.add_argument("--backends", default="auto", help="sqlite,postgres | auto (PostgreSQL when installed)")
    ap.add_argument("--bin", default=None)
    ap.add_argument("--out", default=str(BENCH / "results"))
    ap.add_argument("--scenarios", default="health,write,read,mixed,list,fixed_rate",
                    help="comma-separated subset of: health,write,read,mixed,list,fixed_rate")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra server environment, e.g. SHIPSHAPE_LOG__LEVEL=warn (for experiments)")
    ap.add_argument("--no-telemetry", action="store_true", help="do not export spans (default: export to a local OTLP sink)")
    ap.add_argument("--command", default="bench/run.sh", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        args.duration, args.warmup, args.startup_runs = 2.0, 1.0, 2
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
