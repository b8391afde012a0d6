#!/usr/bin/env python3
"""Measure the service's memory the way the Deployment runs it, to size requests/limits.

Starts the binary from a rendered overlay with podsim (same env, config, uid, mounts as the
contract tests), reads VmRSS/VmHWM from /proc idle, then under a bounded loopback load
(wrk if installed, else Python threads), then idle again. Loopback only, time-bounded.

    python3 kustomize/tests/measure_memory.py [--overlay dev|prod] [--seconds 20]
        [--connections 64] [--binary target/release/shipshape]
(prod needs SHIPSHAPE_TEST_PG_URL, e.g. from `start_postgres` in .ci/lib.sh.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from conftest import REPO, psql, rendered  # noqa: E402
from podsim import Pod, http, random_secret  # noqa: E402


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample(pod, label, rows):
    rss, hwm = status_kib(pod.proc.pid, "VmRSS"), status_kib(pod.proc.pid, "VmHWM")
    threads = status_kib(pod.proc.pid, "Threads")
    rows.append((label, rss, hwm, threads))
    print(f"  {label:<34} RSS {rss / 1024:7.1f} MiB   peak {hwm / 1024:7.1f} MiB   threads {threads}")


def python_load(url_list, seconds, connections, post_url):
    stop = time.monotonic() + seconds
    count = [0]

    def worker(i):
        n = 0
        while time.monotonic() < stop:
            if n % 10 == 0:
                http("POST", post_url, {"name": f"load {i}-{n}", "price": 1.25, "quantity": n, "tags": ["load"]})
            else:
                http("GET", url_list[n % len(url_list)])
            n += 1
        count[0] += n

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return f"{count[0]} requests ({count[0] / seconds:.0f}/s) from {connections} Python threads"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--overlay", default="dev", choices=["dev", "prod"])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--binary", default=os.environ.get("SHIPSHAPE_BIN", str(REPO / "target/debug/shipshape")))
    a = ap.parse_args()

    secrets = {("shipshape-auth", "hs256-secret"): random_secret()}
    cleanup_db = None
    if a.overlay == "prod":
        admin = os.environ["SHIPSHAPE_TEST_PG_URL"]
        u = urllib.parse.urlsplit(admin)
        name = "shipshape_mem"
        psql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        psql(admin, f"DROP ROLE IF EXISTS {name}")
        psql(admin, f"CREATE ROLE {name} LOGIN PASSWORD 'x'")
        psql(admin, f"CREATE DATABASE {name} OWNER {name}")
        secrets[("shipshape-db-app", "uri")] = f"postgresql://{name}:x@{u.hostname}:{u.port}/{name}"

        def cleanup_db():
            psql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            psql(admin, f"DROP ROLE IF EXISTS {name}")

    pod = Pod.prepare(rendered(a.overlay), a.binary, secrets)
    rows = []
    try:
        pod.start()
        pod.wait_probe("startupProbe")
        pod.wait_probe("readinessProbe", budget=20)
        base = pod.url("http", "")
        print(f"{a.binary} ({a.overlay} overlay: env, config and mounts from the rendered Deployment)")
        time.sleep(2)
        sample(pod, "idle after start", rows)
        for i in range(200):
            http("POST", base + "/v1/items", {"name": f"seed {i}", "price": 2.5, "quantity": i, "tags": ["seed"]})
        first = http("GET", base + "/v1/items?limit=1").json()
        some_id = (first.get("items") or first.get("data") or [{}])[0].get("id", "00000000-0000-0000-0000-000000000000")
        urls = [base + "/v1/items", base + "/v1/items?limit=50", base + f"/v1/items/{some_id}", base + "/healthz"]
        sample(pod, "idle, 200 items stored", rows)

        peak = [0]
        done = threading.Event()

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], status_kib(pod.proc.pid, "VmRSS"))
                time.sleep(0.1)

        w = threading.Thread(target=watch)
        cpu0, t0 = cpu_seconds(pod.proc.pid), time.monotonic()
        w.start()
        if shutil.which("wrk"):
            lua = Path(pod.root.parent / (pod.root.name + ".lua"))
            lua.write_text(
                'local paths = {"/v1/items", "/v1/items?limit=50", "/v1/items/%s", "/healthz"}\n'
                'local n = 0\n'
                'request = function()\n'
                '  n = n + 1\n'
                '  if n %% 10 == 0 then\n'
                '    return wrk.format("POST", "/v1/items", {["content-type"]="application/json"},\n'
                '      \'{"name":"load","price":1.25,"quantity":1,"tags":["load"]}\')\n'
                '  end\n'
                '  return wrk.format("GET", paths[(n %% 4) + 1])\n'
                'end\n' % some_id)
            r = subprocess.run(["wrk", "-t2", f"-c{a.connections}", f"-d{a.seconds}s", "-s", str(lua), base],
                               capture_output=True, text=True, timeout=a.seconds + 30)
            lua.unlink()
            reqs = [ln for ln in r.stdout.splitlines() if "Requests/sec" in ln or "requests in" in ln]
            how = f"wrk -t2 -c{a.connections} -d{a.seconds}s (90% GET, 10% POST): " + "; ".join(s.strip() for s in reqs)
        else:
            how = python_load(urls, a.seconds, a.connections, base + "/v1/items")
        done.set()
        w.join()
        cores = (cpu_seconds(pod.proc.pid) - cpu0) / (time.monotonic() - t0)
        print(f"  load: {how}")
        print(f"  CPU during load: {cores:.2f} cores (machine has {os.cpu_count()}, shared with the load generator)")
        rows.append(("peak RSS during load", peak[0], status_kib(pod.proc.pid, "VmHWM"), 0))
        print(f"  {'peak RSS during load':<34} RSS {peak[0] / 1024:7.1f} MiB")
        sample(pod, "right after load", rows)
        time.sleep(10)
        sample(pod, "10s after load", rows)
        rc, took = pod.terminate(40)
        print(f"  SIGTERM -> exit {rc} after {took:.1f}s")
        print(json.dumps({"overlay": a.overlay, "binary": a.binary, "load": how, "cpu_cores": round(cores, 2),
                          "rows_kib": [{"label": l, "rss": r, "hwm": h} for l, r, h, _ in rows]}))
    finally:
        pod.cleanup()
        if cleanup_db:
            cleanup_db()


if __name__ == "__main__":
    main()
