#!/usr/bin/env python3
"""Experiment 3: kill -9 during a stream of writes, on SQLite and PostgreSQL.

service/tests/api/process.rs kills once, with 4 writers, and checks the acknowledged items. This
goes further: 32 concurrent writers (creates, plus PATCHes of already acknowledged items), three
kill -9 / restart rounds on the same database, killed at a random moment each time, and after
every round *every* acknowledged write so far must read back exactly as acknowledged (an
acknowledged PATCH must be visible with its version). On SQLite the database file must also
pass `PRAGMA integrity_check` after the last crash, and the writes must really have been
group-committed: the scrape taken just before each kill must show groups of more than one write
on average (`shipshape_db_commit_group_size`), so the kills land on group commits.
"""

import asyncio
import json
import random
import re
import signal
import sqlite3
import sys
import time

from common import Experiment, aioload, expect, h, say

ROUNDS = 3
WRITERS = 32


async def writers(port: int, headers: dict, stop: asyncio.Event, acked: dict, unsure: dict, round_no: int):
    """Creates items and patches acknowledged ones; records the last acknowledged state, and for
    a PATCH that got no answer (killed mid-request) the change it may or may not have made."""
    hdr = dict(headers, **{"Content-Type": "application/json"})
    patch_hdr = dict(headers, **{"Content-Type": "application/merge-patch+json"})

    async def one(w: int):
        conn = aioload.Conn(port)
        i = 0
        while not stop.is_set():
            i += 1
            if acked and i % 4 == 0:
                # PATCH an item this writer owns (no two writers touch the same item).
                mine = [k for k, v in acked.items() if v["_writer"] == w]
                if mine:
                    item_id = random.choice(mine)
                    change = {"quantity": i, "description": f"patched r{round_no} n{i}"}
                    unsure.setdefault(item_id, []).append(change)
                    r = await conn.request("PATCH", f"/v1/items/{item_id}", patch_hdr, aioload.json_body(change), timeout=10)
                    if r.error == "refused":  # never reached the server
                        unsure[item_id].remove(change)
                    if r.status == 200:
                        try:
                            acked[item_id] = dict(r.json(), _writer=w)
                            del unsure[item_id]
                        except ValueError:
                            pass  # cut off mid-body by the kill: not acknowledged
                    elif r.error:
                        conn.close()
                    continue
            body = aioload.json_body(h.item_body(f"crash r{round_no} w{w} n{i}", i))
            r = await conn.request("POST", "/v1/items", hdr, body, timeout=10)
            if r.status == 201:
                try:
                    item = r.json()
                    acked[item["id"]] = dict(item, _writer=w)
                except ValueError:
                    pass
            elif r.error:
                conn.close()
                await asyncio.sleep(0.01)
        conn.close()

    await asyncio.gather(*(one(w) for w in range(WRITERS)))


def verify(x: Experiment, svc: h.Service, acked: dict, unsure: dict) -> None:
    """Every acknowledged state reads back exactly; an item may be one version further only by
    the unanswered PATCH that was in flight at the kill (then that becomes its known state)."""
    missing, changed = [], []
    for item_id, want in acked.items():
        status, _, b = h.request(svc.port, "GET", f"/v1/items/{item_id}", headers=x.headers())
        if status != 200:
            missing.append((item_id, status))
            continue
        got = json.loads(b)
        expected = {k: v for k, v in want.items() if k != "_writer"}
        if got == expected:
            unsure.pop(item_id, None)
            continue
        changes = unsure.pop(item_id, [])
        change = next((c for c in changes if all(got[k] == v for k, v in c.items())), None)
        if (
            change
            and got["version"] == expected["version"] + 1
            and {k: got[k] for k in change} == change
            and {k: v for k, v in got.items() if k not in change and k not in ("version", "updated_at")}
            == {k: v for k, v in expected.items() if k not in change and k not in ("version", "updated_at")}
        ):
            acked[item_id] = dict(got, _writer=want["_writer"])
            continue
        changed.append((item_id, expected, got))
    expect(not missing, f"{len(missing)} acknowledged items missing after kill -9, e.g. {missing[:3]}")
    expect(not changed, f"{len(changed)} acknowledged items differ after kill -9, e.g. {changed[:1]}")


def mean_group_size(port: int) -> float | None:
    """Writes per SQLite commit group so far, from the live scrape (None: no groups yet)."""
    _, _, text = h.request(port, "GET", "/metrics")
    def value(name: str) -> float:
        m = re.search(rf"^{name} (\S+)$", text.decode(), re.M)
        return float(m.group(1)) if m else 0.0
    count = value("shipshape_db_commit_group_size_count")
    return value("shipshape_db_commit_group_size_sum") / count if count else None


def crash_rounds(x: Experiment, backend: str, url: str) -> str:
    acked: dict = {}
    unsure: dict = {}
    kills = []
    groups = []
    for rnd in range(1, ROUNDS + 1):
        svc = x.service(url, name=f"crash-{backend}-{rnd}").start()
        svc.wait_ready()
        if rnd > 1:
            verify(x, svc, acked, unsure)  # the previous round's crash

        async def load():
            stop = asyncio.Event()
            task = asyncio.create_task(writers(svc.port, x.headers(), stop, acked, unsure, rnd))
            await asyncio.sleep(random.uniform(1.0, 2.0))
            if backend == "sqlite":
                groups.append(await asyncio.to_thread(mean_group_size, svc.port))
            svc.signal(signal.SIGKILL)
            kills.append(time.monotonic())
            await asyncio.sleep(0.3)
            stop.set()
            await task

        before = len(acked)
        asyncio.run(load())
        svc.wait_exit(5)
        expect(svc.proc.returncode == -signal.SIGKILL, f"round {rnd}: not killed by SIGKILL ({svc.proc.returncode})")
        say(f"{backend} round {rnd}: kill -9 after {len(acked) - before} new items acknowledged")
    final = x.service(url, name=f"crash-{backend}-final").start()
    final.wait_ready()
    verify(x, final, acked, unsure)
    final.stop()
    patched = sum(1 for v in acked.values() if v["version"] > 1)
    extra = ""
    if backend == "sqlite":
        path = url.removeprefix("sqlite://")
        # The last process was stopped cleanly; check the file the crashes left behind too.
        res = sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0]
        expect(res == "ok", f"PRAGMA integrity_check: {res}")
        expect(all(g and g > 1.0 for g in groups), f"writes were not group-committed before the kills: mean group sizes {groups}")
        extra = ", integrity_check ok, mean commit group before each kill " + ", ".join(f"{g:.1f}" for g in groups) + " writes"
    return f"{backend}: {ROUNDS} kill -9 rounds, {len(acked)} acknowledged items ({patched} patched) all present and intact{extra}"


def body(x: Experiment) -> str:
    parts = [crash_rounds(x, "sqlite", f"sqlite://{x.dir}/data/shipshape.db")]
    if h.postgres_available():
        pg = x.postgres(fsync=True)
        parts.append(crash_rounds(x, "postgres", pg.create_database("crash")))
    else:
        parts.append("postgres: SKIPPED (no PostgreSQL binaries)")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(Experiment("crash-durability", 150).run(body))
