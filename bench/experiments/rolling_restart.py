#!/usr/bin/env python3
"""Experiment 2: rolling restart of 3 instances on PostgreSQL behind HAProxy, under load.

HAProxy (config written here, loopback only) balances over 3 instances sharing one PostgreSQL
database and health-checks GET /readyz every 100 ms (one failed check takes an instance out,
two good ones put it back). `retries 0` and no redispatch: HAProxy never retries a request on
another instance, so any request an instance drops reaches the client as an error. wrk drives
the 90/10 GET/POST mix through HAProxy on 32 keep-alive connections (HAProxy keeps its own
keep-alive connections to the instances) while each instance in turn gets SIGTERM, drains
(drain_delay 1 s), exits 0, is started again and is back in rotation before the next one.
Zero client-visible errors allowed: no connect/read/write errors, no non-2xx, no timeouts.
A second, slower client reads back every item it created through the balancer after each
write (read-after-write across instances).
"""

import asyncio
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request

from common import Experiment, Wrk, aioload, expect, h, require_tools, say, seed

INSTANCES = 3
DRAIN_S = 1.0


def haproxy_cfg(lb_port: int, stats_port: int, ports: list[int]) -> str:
    servers = "\n".join(f"  server i{n} 127.0.0.1:{p}" for n, p in enumerate(ports, 1))
    return f"""global
  maxconn 4096

defaults
  mode http
  timeout connect 1s
  timeout client 15s
  timeout server 15s
  timeout check 500ms
  retries 0
  option http-keep-alive

frontend stats
  bind 127.0.0.1:{stats_port}
  stats enable
  stats uri /stats

frontend web
  bind 127.0.0.1:{lb_port}
  default_backend shipshape

backend shipshape
  balance roundrobin
  option httpchk
  http-check send meth GET uri /readyz
  http-check expect status 200
  default-server check inter 100ms fastinter 100ms downinter 100ms rise 2 fall 1
{servers}
"""


def lb_states(stats_port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        f = line.split(",")
        if len(f) > 17 and f[0] == "shipshape" and f[1].startswith("i"):
            out[f[1]] = f[17]
    return out


def wait_for(cond, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(interval)
    raise h.Failure(f"timed out after {timeout}s waiting for {what}")


async def read_after_write(lb_port: int, headers: dict, stop: asyncio.Event, out: list):
    conn = aioload.Conn(lb_port)
    i = 0
    while not stop.is_set():
        i += 1
        r = await conn.request("POST", "/v1/items", dict(headers, **{"Content-Type": "application/json"}),
                               aioload.json_body(h.item_body(f"rolling raw n{i}", i)), timeout=10)
        out.append(r)
        if r.status == 201:
            g = await conn.request("GET", r.headers.get("location", "/v1/items/x"), headers, timeout=10)
            out.append(g)
        if r.error:
            conn.close()
        await asyncio.sleep(0.02)
    conn.close()


def body(x: Experiment) -> str:
    require_tools("wrk", "haproxy")
    pg = x.postgres()
    url = pg.create_database("rolling")
    env = {"SHIPSHAPE_HTTP__DRAIN_DELAY": f"{DRAIN_S:g}s", "SHIPSHAPE_HTTP__SHUTDOWN_GRACE": "10s"}
    # One migration before the instances start, so they do not race to create the schema.
    mig = subprocess.run([str(x.binary), "migrate"], env=h.clean_env(dict(x.auth.env, SHIPSHAPE_DATABASE__URL=url)),
                         capture_output=True, text=True, timeout=60, cwd=x.dir)
    expect(mig.returncode == 0, f"migrate failed: {mig.stderr[-300:]}")
    svcs = [x.service(url, env, name=f"inst{n}").start() for n in range(1, INSTANCES + 1)]
    for s in svcs:
        s.wait_ready()
    lb_port, stats_port = h.free_port(), h.free_port()
    cfg = x.dir / "haproxy.cfg"
    cfg.write_text(haproxy_cfg(lb_port, stats_port, [s.port for s in svcs]))
    check = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
    expect(check.returncode == 0, f"haproxy config: {check.stderr}")
    hap = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=open(x.dir / "haproxy.log", "w"), stderr=subprocess.STDOUT)
    x.cleanups.append(lambda: (hap.kill(), hap.wait()))
    names = [f"i{n}" for n in range(1, INSTANCES + 1)]
    wait_for(lambda: all(lb_states(stats_port).get(n) == "UP" for n in names), 10, "all instances UP in HAProxy")
    ids = seed(lb_port, x.headers(), 100)
    (x.dir / "ids").write_text("\n".join(ids) + "\n")

    wrk = Wrk(lb_port, "mix", 32, 120, {"BENCH_IDS": str(x.dir / "ids"), "BENCH_TOKEN": x.auth.token or ""}, "shipshape-rolling-wrk")
    raw_results: list = []
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    import threading

    raw_thread = threading.Thread(target=lambda: loop.run_until_complete(read_after_write(lb_port, x.headers(), stop, raw_results)))
    raw_thread.start()
    timings = []
    try:
        time.sleep(2.0)
        for n, svc in enumerate(svcs):
            name = names[n]
            t0 = time.monotonic()
            svc.signal(signal.SIGTERM)
            t_out = wait_for(lambda: lb_states(stats_port).get(name, "").startswith("DOWN"), 5, f"{name} DOWN in HAProxy")
            code = svc.wait_exit(DRAIN_S + 15)
            t_exit = time.monotonic()
            expect(code == 0, f"{name}: exit code {code} after SIGTERM\n{svc.tail()}")
            svc.start()
            svc.wait_ready()
            t_in = wait_for(lambda: lb_states(stats_port).get(name) == "UP", 10, f"{name} UP again")
            timings.append(f"{name} out {1000 * (t_out - t0):.0f} ms, exit 0 {1000 * (t_exit - t0):.0f} ms, back {1000 * (t_in - t0):.0f} ms")
            say(timings[-1])
        time.sleep(2.0)
    finally:
        loop.call_soon_threadsafe(stop.set)
        raw_thread.join(timeout=20)
        summary = wrk.stop()
    errs = summary["errors"]
    total_errors = sum(errs.values())
    expect(summary["requests"] > 1000, f"wrk sent only {summary['requests']} requests")
    expect(total_errors == 0, f"{total_errors} client-visible errors through HAProxy: {errs}")
    raw_bad = [(r.method, r.path, r.status, r.error) for r in raw_results if r.status not in (200, 201)]
    expect(not raw_bad, f"read-after-write client saw failures: {raw_bad[:5]}")
    rps = summary["requests"] / (summary["duration_us"] / 1e6)
    return (
        f"{INSTANCES} instances restarted one at a time behind HAProxy; wrk {summary['requests']} requests "
        f"(~{rps:.0f} req/s) and {len(raw_results)} read-after-write requests, 0 errors; " + "; ".join(timings)
    )


if __name__ == "__main__":
    sys.exit(Experiment("rolling-restart", 120).run(body))
