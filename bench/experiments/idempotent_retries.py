#!/usr/bin/env python3
"""Experiment 5: POST retries with an Idempotency-Key after dropped connections create no duplicates.

A client sends POST /v1/items with an Idempotency-Key and drops the connection without reading
the answer: right after sending (the server may not even have read it), after a random 0-20 ms
(the server is somewhere in the handler or the commit), or with an abortive RST close. It then
retries the same request, sometimes twice at once on two connections, until it gets an answer.
Every logical create must end with exactly one item (same id in every 201 the client got, and
exactly one stored item with that name); replays carry Idempotent-Replayed: true. On SQLite and
PostgreSQL.
"""

import asyncio
import json
import random
import socket
import sys
import uuid

from common import Experiment, aioload, expect, h, say

CREATES = 150
PARALLEL = 16


async def drop_after_send(port: int, raw: bytes, how: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    if how == "delay":
        await asyncio.sleep(random.uniform(0, 0.02))
    if how == "rst":
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()
    else:
        writer.close()


def raw_post(port: int, headers: dict, body: bytes) -> bytes:
    lines = ["POST /v1/items HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def logical_create(port: int, headers: dict, tag: str, n: int, stats: dict) -> tuple[str, set]:
    name = f"{tag} n{n}"
    key = f"{tag}-{n}-{uuid.uuid4()}"
    body = aioload.json_body(h.item_body(name, n))
    hdr = dict(headers, **{"Content-Type": "application/json", "Idempotency-Key": key})
    raw = raw_post(port, hdr, body)
    for _ in range(random.randint(1, 3)):
        how = random.choice(["now", "delay", "rst"])
        stats[how] = stats.get(how, 0) + 1
        await drop_after_send(port, raw, how)
    ids = set()
    attempts = 2 if n % 3 == 0 else 1  # every third create: two retries racing each other
    for _ in range(20):
        conns = [aioload.Conn(port) for _ in range(attempts)]
        rs = await asyncio.gather(*(c.request("POST", "/v1/items", hdr, body, timeout=10) for c in conns))
        for c in conns:
            c.close()
        done = False
        for r in rs:
            if r.status == 201:
                ids.add(r.json()["id"])
                if r.headers.get("idempotent-replayed") == "true":
                    stats["replayed"] = stats.get("replayed", 0) + 1
                done = True
            elif r.status == 503 or r.error:
                stats["retried"] = stats.get("retried", 0) + 1  # busy: retry again, like a client would
            else:
                raise h.Failure(f"{name}: retry answered {r.status} {r.body[:200]!r}")
        if done:
            return name, ids
        await asyncio.sleep(0.05)
    raise h.Failure(f"{name}: no 201 after 20 retries")


def run_backend(x: Experiment, backend: str, url: str) -> str:
    svc = x.service(url, name=f"idem-{backend}").start()
    svc.wait_ready()
    tag = f"idem-{backend}-{uuid.uuid4().hex[:8]}"
    stats: dict = {}

    async def all_creates():
        sem = asyncio.Semaphore(PARALLEL)

        async def one(n):
            async with sem:
                return await logical_create(svc.port, x.headers(), tag, n, stats)

        return await asyncio.gather(*(one(n) for n in range(CREATES)))

    outcomes = asyncio.run(all_creates())
    split = [(name, ids) for name, ids in outcomes if len(ids) != 1]
    expect(not split, f"{backend}: one create answered with different ids: {split[:3]}")
    # Exactly one stored item per logical create.
    stored: dict = {}
    cursor = ""
    while True:
        path = f"/v1/items?limit=100&q={tag}" + (f"&cursor={cursor}" if cursor else "")
        status, _, b = h.request(svc.port, "GET", path, headers=x.headers())
        expect(status == 200, f"list: {status}")
        page = json.loads(b)
        for it in page["items"]:
            stored.setdefault(it["name"], []).append(it["id"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    dups = {k: v for k, v in stored.items() if len(v) > 1}
    expect(not dups, f"{backend}: duplicates created: {list(dups.items())[:3]}")
    for name, ids in outcomes:
        expect(stored.get(name) == list(ids), f"{backend}: {name} stored as {stored.get(name)}, answered {ids}")
    expect(len(stored) == CREATES, f"{backend}: {len(stored)} items stored for {CREATES} creates")
    svc.stop()
    drops = stats.get("now", 0) + stats.get("delay", 0) + stats.get("rst", 0)
    say(f"{backend}: {stats}")
    return (
        f"{backend}: {CREATES} creates, {drops} dropped attempts, {stats.get('replayed', 0)} replays, "
        f"{CREATES} items stored, 0 duplicates"
    )


def body(x: Experiment) -> str:
    parts = [run_backend(x, "sqlite", f"sqlite://{x.dir}/data/shipshape.db")]
    if h.postgres_available():
        pg = x.postgres()
        parts.append(run_backend(x, "postgres", pg.create_database("idem")))
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(Experiment("idempotent-retries", 120).run(body))
