#!/usr/bin/env python3
"""Experiment 6: 10,000 idle connections and slow-loris clients do not stop normal clients.

Opens 10,000 TCP connections to the service that never send a byte (with the default
`http.max_connections` of 10,000 that takes every connection slot), plus 50 slow-loris clients
that dribble a request head one byte every 0.5 s and never finish it. Then normal clients
(8 keep-alive connections, GET by id and POST) must be served: every request answered
correctly, the first ones within 2.5 s (a new client waits until idle connections are closed
to make room), p99 reported. Memory must stay bounded (RSS with 10,000 connections open,
limit 256 MB), the slow-loris connections must be cut by `http.header_read_timeout` (3 s here
to keep the test short; default 10 s). The file-descriptor limit is raised to the hard limit
for this process and the server.
"""

import asyncio
import resource
import socket
import sys
import time

from common import Experiment, aioload, expect, h, say, seed

IDLE = 10_000
LORIS = 50
HEADER_TIMEOUT = 3.0
RSS_LIMIT_MB = 256


def raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else need
    if target < need:
        raise h.Failure(f"hard limit for open files is {hard}, need {need} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def open_idle(port: int, n: int, batch: int = 500) -> list[socket.socket]:
    """n connections that never send anything. Non-blocking connects in batches: when the accept
    queue overflows (a loaded machine) a dropped SYN costs 1 s per batch, not 1 s per socket."""
    import errno
    import select

    socks = []
    for start in range(0, n, batch):
        pending = {}
        for _ in range(min(batch, n - start)):
            s = socket.socket()
            s.setblocking(False)
            rc = s.connect_ex(("127.0.0.1", port))
            if rc not in (0, errno.EINPROGRESS):
                raise h.Failure(f"connect: {errno.errorcode.get(rc, rc)}")
            pending[s.fileno()] = s
        p = select.poll()
        for fd in pending:
            p.register(fd, select.POLLOUT)
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            for fd, _ in p.poll(1000):
                s = pending.pop(fd)
                p.unregister(fd)
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise h.Failure(f"connect failed: {errno.errorcode.get(err, err)}")
                socks.append(s)
        if pending:
            raise h.Failure(f"{len(pending)} connections not established within 10 s")
    return socks


def still_open(socks: list[socket.socket]) -> int:
    """How many of the sockets the server has not closed (a closed one reads EOF or an error)."""
    n = 0
    for s in socks:
        try:
            data = s.recv(4096)
            if data:  # e.g. a 408 answer before the close: counts as closed by the server
                continue
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


async def slow_loris(port: int, stop: asyncio.Event, cut: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /v1/items?limit=1 HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    t0 = time.monotonic()
    for b in head:
        if stop.is_set():
            break
        try:
            writer.write(bytes([b]))
            await writer.drain()
            got = await asyncio.wait_for(reader.read(1024), 0.5)
            # The server answered (408) or closed: cut.
            cut.append(time.monotonic() - t0)
            break
        except asyncio.TimeoutError:
            continue
        except (ConnectionError, OSError):
            cut.append(time.monotonic() - t0)
            break
    writer.close()


async def normal_clients(port: int, headers: dict, ids: list[str], seconds: float, n: int = 8):
    results = []
    deadline = time.monotonic() + seconds

    async def one(w):
        conn = aioload.Conn(port)
        i = 0
        while time.monotonic() < deadline:
            i += 1
            if i % 5 == 0:
                r = await conn.request("POST", "/v1/items", dict(headers, **{"Content-Type": "application/json"}),
                                       aioload.json_body(h.item_body(f"bounds w{w} n{i}", i)), timeout=5)
                r.tag = "201"
            else:
                r = await conn.request("GET", f"/v1/items/{ids[i % len(ids)]}", headers, timeout=5)
                r.tag = "200"
            results.append(r)
            if r.error:
                conn.close()
            await asyncio.sleep(0.005)
        conn.close()

    await asyncio.gather(*(one(w) for w in range(n)))
    return results


def body(x: Experiment) -> str:
    limit = raise_nofile(IDLE + 2000)
    svc = x.service(
        f"sqlite://{x.dir}/data/shipshape.db",
        {"SHIPSHAPE_HTTP__HEADER_READ_TIMEOUT": f"{HEADER_TIMEOUT:g}s"},
        name="bounds",
    ).start()
    svc.wait_ready()
    ids = seed(svc.port, x.headers(), 50)
    rss0 = svc.rss_kb() / 1024
    say(f"open-files limit {limit}; RSS before {rss0:.1f} MB")

    t_open = time.monotonic()
    idle = open_idle(svc.port, IDLE)
    opened_s = time.monotonic() - t_open
    time.sleep(0.5)
    rss_idle = svc.rss_kb() / 1024
    say(f"{IDLE} idle connections open in {opened_s:.1f}s; RSS {rss_idle:.1f} MB")

    async def scenario():
        stop = asyncio.Event()
        cut: list = []
        loris = [asyncio.create_task(slow_loris(svc.port, stop, cut)) for _ in range(LORIS)]
        results = await normal_clients(svc.port, x.headers(), ids, HEADER_TIMEOUT + 2.0)
        stop.set()
        await asyncio.gather(*loris)
        return results, cut

    results, cut = asyncio.run(scenario())
    rss_load = svc.hwm_kb() / 1024
    idle_left = still_open(idle)
    bad = [r for r in results if r.error or str(r.status) != r.tag]
    lat = sorted(r.latency for r in results)
    p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0
    for s in idle:
        s.close()
    time.sleep(1.0)
    rss_after = svc.rss_kb() / 1024
    expect(svc.alive(), f"server died:\n{svc.tail()}")
    expect(len(results) > 200, f"normal clients got only {len(results)} answers")
    expect(not bad, f"{len(bad)} normal requests failed, e.g. {[(r.method, r.path, r.status, r.error) for r in bad[:3]]}")
    expect(lat[-1] < 2.5, f"slowest normal request {lat[-1] * 1000:.0f} ms (limit 2500 ms)")
    expect(p99 < 1000, f"normal requests p99 {p99:.0f} ms (limit 1000 ms)")
    expect(rss_load < RSS_LIMIT_MB, f"peak RSS {rss_load:.0f} MB with {IDLE} connections (limit {RSS_LIMIT_MB} MB)")
    expect(len(cut) == LORIS, f"only {len(cut)}/{LORIS} slow-loris connections were cut")
    expect(max(cut) < HEADER_TIMEOUT + 2, f"slow-loris cut after up to {max(cut):.1f}s (header_read_timeout {HEADER_TIMEOUT}s)")
    code = svc.stop(timeout=30)
    expect(code == 0, f"exit code {code} after SIGTERM")
    return (
        f"{len(results)} normal requests all answered (p99 {p99:.1f} ms, max {lat[-1] * 1000:.1f} ms) with {IDLE} idle "
        f"connections and {LORIS} slow-loris clients open; slow-loris cut after {min(cut):.1f}-{max(cut):.1f}s; "
        f"{IDLE - idle_left} of the idle connections closed by the server to make room; "
        f"RSS {rss0:.1f} MB -> {rss_idle:.1f} MB with {IDLE} idle (peak {rss_load:.1f} MB) -> {rss_after:.1f} MB after close"
    )


if __name__ == "__main__":
    sys.exit(Experiment("resource-bounds", 90).run(body))
