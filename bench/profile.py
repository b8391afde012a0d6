#!/usr/bin/env python3
"""Profile the server under one wrk scenario with perf; print self time by component.

Usage (bench/profile.sh builds the binary): profile.py BINARY MODE SECONDS [KEY=VALUE ...]
"""

import collections
import os
import pathlib
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "lib"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench as b  # noqa: E402
import harness as h  # noqa: E402

# Component of a symbol, by the crate or library it comes from.
RULES = [
    (r"^\[k\]", "kernel (syscalls, TCP loopback, scheduler)"),
    (r"^libc.*(malloc|free|realloc|consolidate|unlink_chunk|_int_)", "allocator (glibc malloc/free)"),
    (r"^libc.*(memmove|memcpy|memcmp|memset|strlen)", "memcpy/memcmp"),
    (r"^libc", "libc other (futex, locks)"),
    (r"^\[vdso\]", "vdso (clock_gettime)"),
    (r"(sqlite3|pcache|btree|Vdbe|^\S+\s+[a-z][A-Za-z0-9]+$)", "SQLite (C library)"),
    (r"sqlx", "sqlx (pool, SQLite worker thread, rows)"),
    (r"flume", "flume channels (sqlx worker hand-off)"),
    (r"tracing_subscriber|tracing_core|tracing::", "tracing (spans, JSON log lines)"),
    (r"serde_json|serde_core|serde::", "serde / serde_json"),
    (r"core::fmt|LowerHex|pad_integral|Formatter", "core::fmt (formatting)"),
    (r"hyper|h2::", "hyper"),
    (r"axum|tower|matchit", "axum / tower"),
    (r"tokio", "tokio runtime"),
    (r"prometheus", "prometheus-client"),
    (r"jsonwebtoken|ring::|hmac|sha2", "auth (JWT, HMAC)"),
    (r"opentelemetry", "OpenTelemetry"),
    (r"http::|bytes::", "http / bytes"),
    (r"alloc::|hashbrown|core::", "core / alloc / hashbrown"),
    (r"shipshape", "shipshape (own code)"),
]


def component(line: str) -> str:
    for pattern, name in RULES:
        if re.search(pattern, line):
            return name
    return "other"


def main() -> int:
    binary, mode, secs = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    overrides = dict(kv.split("=", 1) for kv in sys.argv[4:])
    env = {"SHIPSHAPE_LOG__FORMAT": "json"}
    d = pathlib.Path(tempfile.mkdtemp(prefix="shipshape-profile."))
    feats = h.features(binary)
    auth = h.setup_auth(binary, d, feats)
    env.update(auth.env)
    sink = None
    if feats.telemetry and "SHIPSHAPE_TELEMETRY__OTLP_ENDPOINT" not in overrides:
        sink = h.OtlpSink(d, cpu=b.GENERATOR_CPU)
        env.update(sink.env())
    env.update(overrides)
    svc = h.Service(binary, f"sqlite://{d}/data/shipshape.db", d, env=env, cpu=b.SERVER_CPU).start()
    data = d / "perf.data"
    try:
        svc.wait_ready()
        b.seed(svc.port, auth.headers(), 300)
        ids, cursors = b.collect_ids_and_cursors(svc.port, auth.headers())
        (d / "ids").write_text("\n".join(ids) + "\n")
        (d / "cursors").write_text("\n".join(cursors) + "\n")
        wenv = {"BENCH_IDS": str(d / "ids"), "BENCH_CURSORS": str(d / "cursors"), "BENCH_TOKEN": auth.token or ""}
        b.run_wrk(svc.port, mode, 2, 32, wenv)  # warm-up
        perf = subprocess.Popen(
            ["perf", "record", "-F", "1999", "-p", str(svc.pid), "-o", str(data), "--", "sleep", str(secs)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        cpu0 = svc.cpu_seconds()
        r = b.wrk_summary(b.run_wrk(svc.port, mode, secs, 32, wenv))
        cpu = (svc.cpu_seconds() - cpu0) * 1e6 / r["requests"]
        perf.wait()
    finally:
        svc.kill()
        if sink:
            sink.stop()
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso,sym", "--stdio", "-g", "none"],
        capture_output=True, text=True,
    ).stdout
    rows = []
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+(\[.\])\s+(.*)", line)
        if m:
            pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
            key = f"{kind} {sym}" if kind == "[k]" else (f"[vdso] {sym}" if dso == "[vdso]" else (f"libc {sym}" if dso.startswith("libc") else f"bin {sym}"))
            rows.append((pct, key))
    by = collections.Counter()
    for pct, key in rows:
        by[component(key)] += pct
    print(f"{mode}: {r['rps']:.0f} req/s, {cpu:.1f} us server CPU per request ({secs}s, {', '.join(f'{k}={v}' for k, v in env.items() if 'SECRET' not in k)})")
    print("\nself time by component (share of server CPU, and us per request):")
    for name, pct in by.most_common():
        if pct >= 0.5:
            print(f"  {pct:5.1f}%  {pct * cpu / 100:5.1f} us  {name}")
    print("\ntop functions:")
    for pct, key in rows[:25]:
        print(f"  {pct:5.2f}%  {key[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
