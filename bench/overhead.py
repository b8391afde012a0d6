#!/usr/bin/env python3
"""Telemetry overhead: the same request mix against the service with telemetry off and on,
measured in alternation so that this VM's noise (one bench.py run can be 30% off the next)
hits every variant alike. docs/observability.md#overhead quotes its output.

One server per variant runs at once, all pinned to CPU 0 (SQLite, release build, auth on with a
bearer token, rate limiting off, spans exported to a local OTLP sink where the variant exports).
They are loaded one at a time, in short slices whose order rotates each cycle, by wrk on CPU 1
with the read-heavy mix (90% GET by id, 10% POST). Per slice: the server's CPU time
(utime+stime from /proc) over the requests it served. The figure per variant is the median over
cycles of (CPU/request of the variant) / (CPU/request of `off` in the same cycle) - 1: the share
of throughput that telemetry costs on a CPU-bound server. Concurrent loading was tried first and
dropped: four servers time-sharing one core cost ~150 us per request each, nothing like one
server's ~60.

Variants (`--variants`, default all):
  off        request logs off (log.level=warn), no span export; metrics stay on (always are)
  off2       a second, identical `off` server: the A/A control; how far it lands from `off`
             is what two servers differ by without any telemetry difference (the noise floor)
  logs       JSON request logs at info (the default), no span export
  export5    logs + OTLP/HTTP span export of 5% of traces (telemetry.sample_ratio=0.05)
  export10   logs + export of 10% of traces (telemetry.sample_ratio=0.1)
  export100  logs + export of every trace

Usage: bench/overhead.py [--bin PATH] [--cycles 12] [--slice 2] [--variants off,logs,...] [--out F]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "lib"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench as b  # noqa: E402
import harness as h  # noqa: E402

VARIANTS = {
    "off": ({"SHIPSHAPE_LOG__LEVEL": "warn"}, None),
    "off2": ({"SHIPSHAPE_LOG__LEVEL": "warn"}, None),
    "logs": ({}, None),
    "export5": ({}, "0.05"),
    "export10": ({}, "0.1"),
    "export100": ({}, "1.0"),
}


def measure(binary, variants: list[str], cycles: int, slice_s: float, warmup: float, conns: int, workroot) -> list[dict]:
    wd = pathlib.Path(tempfile.mkdtemp(prefix="overhead.", dir=workroot))
    auth = h.setup_auth(binary, wd)
    sinks, servers = [], {}
    try:
        for name in variants:
            extra, ratio = VARIANTS[name]
            env = {"SHIPSHAPE_LOG__FORMAT": "json", "SHIPSHAPE_LOG__LEVEL": "info", **auth.env, **extra}
            if ratio is not None:
                (wd / f"sink-{name}").mkdir()
                sink = h.OtlpSink(wd / f"sink-{name}", cpu=b.GENERATOR_CPU)
                sinks.append(sink)
                env.update(sink.env())
                env["SHIPSHAPE_TELEMETRY__SAMPLE_RATIO"] = ratio
            d = wd / f"srv-{name}"
            d.mkdir()
            svc = h.Service(binary, f"sqlite://{d}/shipshape.db", d, env=env, cpu=b.SERVER_CPU, name=name).start()
            servers[name] = svc
        for name, svc in servers.items():
            svc.wait_ready()
            b.seed(svc.port, auth.headers(), 200)
            ids, _ = b.collect_ids_and_cursors(svc.port, auth.headers())
            (wd / f"ids-{name}").write_text("\n".join(ids) + "\n")

        def load(name: str, seconds: float) -> dict:
            svc = servers[name]
            env = {"BENCH_TOKEN": auth.token or "", "BENCH_IDS": str(wd / f"ids-{name}"), "BENCH_GET_PCT": "90"}
            cpu0 = svc.cpu_seconds()
            r = b.run_wrk(svc.port, "mix", seconds, conns, env)
            return {
                "requests": r["requests"],
                "errors": sum(r["errors"].values()),
                "cpu_s": svc.cpu_seconds() - cpu0,
                "seconds": r["duration_us"] / 1e6,  # wrk runs whole seconds, not --slice exactly
            }

        for name in servers:
            load(name, warmup)
        # Short slices in turn, the order rotating each cycle: what the machine does over a
        # few seconds hits every variant alike.
        slices = []
        for c in range(cycles):
            order = variants[c % len(variants):] + variants[: c % len(variants)]
            slices.append({name: load(name, slice_s) for name in order})
        return slices
    finally:
        for svc in servers.values():
            svc.stop()
        for sink in sinks:
            sink.stop()
        shutil.rmtree(wd, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="binary to measure (default: target/release/shipshape)")
    ap.add_argument("--cycles", type=int, default=12, help="rounds over all variants")
    ap.add_argument("--slice", type=float, default=2.0, help="seconds of load per variant per cycle")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", help="write every slice and the summary as JSON here")
    args = ap.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "off" not in variants:
        ap.error(f"variants must include off and be among {', '.join(VARIANTS)}; got {args.variants}")
    binary = h.find_binary(args.bin)
    workroot = pathlib.Path(tempfile.mkdtemp(prefix="shipshape-overhead."))
    try:
        slices = measure(binary, variants, args.cycles, args.slice, args.warmup, args.connections, workroot)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    summary = {}
    for name in variants:
        per_req = [c[name]["cpu_s"] * 1e6 / max(c[name]["requests"], 1) for c in slices]
        off = [c["off"]["cpu_s"] * 1e6 / max(c["off"]["requests"], 1) for c in slices]
        rel = sorted(x / o - 1 for x, o in zip(per_req, off))
        q = statistics.quantiles(rel, n=4) if len(rel) > 1 else [rel[0]] * 3
        summary[name] = {
            "cpu_us_per_req_median": round(statistics.median(per_req), 1),
            "rps_median": round(statistics.median(c[name]["requests"] / c[name]["seconds"] for c in slices)),
            "overhead_pct_median": round(100 * statistics.median(rel), 1),
            "overhead_pct_quartiles": [round(100 * q[0], 1), round(100 * q[2], 1)],
            "errors": sum(c[name]["errors"] for c in slices),
        }
    print(f"telemetry overhead: {args.cycles} cycles x {args.slice:g} s per variant, server on CPU 0, wrk on CPU 1, "
          f"90% GET / 10% POST, {args.connections} connections, auth on")
    print(f"  {'variant':10s} {'us/req':>7s} {'req/s':>7s}  {'vs off (median, IQR)':22s} errors")
    for name, s in summary.items():
        lo, hi = s["overhead_pct_quartiles"]
        print(f"  {name:10s} {s['cpu_us_per_req_median']:7.1f} {s['rps_median']:7d}  "
              f"{s['overhead_pct_median']:+6.1f}% ({lo:+.1f} .. {hi:+.1f})   {s['errors']}")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"slices": slices, "summary": summary, "args": vars(args)}, indent=2))
    return 1 if any(s["errors"] for s in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
