#!/usr/bin/env python3
"""Experiment 4: PostgreSQL goes away under load, and comes back.

One instance on a throwaway PostgreSQL, default database settings (acquire_timeout 2s,
ready_timeout 1s), 16 keep-alive clients doing GET by id (80%) and POST (20%), /readyz polled
every 50 ms and /healthz every 100 ms. Two rounds: `pg_ctl stop -m fast` (sessions terminated)
and `-m immediate` (PostgreSQL crash: no goodbye to the clients), each a 5 s outage. Checks:

  * /readyz answers 503 within 2 s of PostgreSQL being down, for the whole outage;
  * every API request during the outage is answered (no hang, no dropped connection) with 503
    application/problem+json, and fast: median within 100 ms, slowest within acquire_timeout;
  * /healthz answers 200 throughout, the process never exits;
  * after `pg_ctl start`, /readyz is 200 and API requests succeed again within 5 s, without a
    restart, and from then on nothing fails;
  * every write acknowledged before, during or after the outage reads back intact.
"""

import asyncio
import json
import random
import sys
import time

from common import Experiment, aioload, expect, h, say, seed

OUTAGE_S = 5.0
READY_LIMIT_S = 2.0
RECOVER_LIMIT_S = 5.0
# Requests that reach the database after it is gone wait at most acquire_timeout (2 s); once
# the service knows it is down, answers must come at once (docs/performance.md).
FAIL_FAST_MAX_S = 2.5
FAIL_FAST_MEDIAN_S = 0.1


async def load(port: int, headers: dict, ids: list[str], stop: asyncio.Event, out: list, acked: dict, n: int = 16):
    async def one(w):
        conn = aioload.Conn(port)
        i = 0
        while not stop.is_set():
            i += 1
            if random.random() < 0.2:
                name = f"outage w{w} n{i}"
                r = await conn.request("POST", "/v1/items", dict(headers, **{"Content-Type": "application/json"}),
                                       aioload.json_body(h.item_body(name, i)), timeout=10)
                if r.status == 201:
                    acked[r.json()["id"]] = r.json()
            else:
                r = await conn.request("GET", f"/v1/items/{random.choice(ids)}", headers, timeout=10)
            out.append(r)
            if r.error:
                conn.close()
            await asyncio.sleep(0.01)
        conn.close()

    await asyncio.gather(*(one(w) for w in range(n)))


def outage_round(x: Experiment, pg: h.Postgres, svc: h.Service, ids: list[str], mode: str, acked: dict) -> str:
    async def run():
        stop, pstop = asyncio.Event(), asyncio.Event()
        results, ready, health = [], [], []
        tasks = [
            asyncio.create_task(load(svc.port, x.headers(), ids, stop, results, acked)),
            asyncio.create_task(aioload.poll(svc.port, "/readyz", pstop, 0.05, ready, timeout=5)),
            asyncio.create_task(aioload.poll(svc.port, "/healthz", pstop, 0.1, health, timeout=5)),
        ]
        await asyncio.sleep(2.0)
        t_stop0 = time.monotonic()
        await asyncio.to_thread(pg.stop, mode)
        t_down = time.monotonic()
        await asyncio.sleep(OUTAGE_S)
        t_start0 = time.monotonic()
        await asyncio.to_thread(pg.start)
        t_up = time.monotonic()
        await asyncio.sleep(RECOVER_LIMIT_S + 2.0)
        stop.set()
        pstop.set()
        await asyncio.gather(*tasks)
        return results, ready, health, t_stop0, t_down, t_start0, t_up

    results, ready, health, t_stop0, t_down, t_start0, t_up = asyncio.run(run())
    expect(svc.alive(), f"{mode}: the service exited during the outage:\n{svc.tail()}")
    before = [r for r in results if r.started + r.latency < t_stop0]
    expect(before and all(r.status in (200, 201) for r in before), f"{mode}: failures before the outage")

    # Liveness throughout.
    bad_health = [(round(t - t_down, 2), s, e) for t, s, _, e in health if s != 200]
    expect(not bad_health, f"{mode}: /healthz not 200 at {bad_health[:5]}")

    # Readiness: 503 within READY_LIMIT_S of `pg_ctl stop` being issued, and until it is back.
    first_503 = next((t + lat - t_stop0 for t, s, lat, _ in ready if t >= t_stop0 and s == 503), None)
    expect(first_503 is not None and first_503 <= READY_LIMIT_S, f"{mode}: /readyz 503 after {first_503}s (limit {READY_LIMIT_S}s)")
    during_ready = {s for t, s, _, _ in ready if t_down + READY_LIMIT_S <= t and t + 1.2 < t_start0}
    expect(during_ready == {503}, f"{mode}: /readyz during the outage: {during_ready}")

    # During the outage: every request answered, 503 problem+json, fast.
    during = [r for r in results if t_down + 0.1 <= r.started and r.started + r.latency <= t_start0]
    expect(len(during) >= 10, f"{mode}: only {len(during)} requests during the outage")
    unanswered = [r for r in during if r.status is None]
    expect(not unanswered, f"{mode}: {len(unanswered)} requests got no answer: {[r.error for r in unanswered[:5]]}")
    not503 = [(r.method, r.status, r.body[:100]) for r in during if r.status != 503]
    expect(not not503, f"{mode}: non-503 answers during the outage: {not503[:5]}")
    not_problem = [r for r in during if not r.headers.get("content-type", "").startswith("application/problem+json")]
    expect(not not_problem, f"{mode}: 503 without problem+json: {not_problem[0].headers if not_problem else ''}")
    slowest = max(r.latency for r in during)
    lats = sorted(r.latency for r in during)
    median = lats[len(lats) // 2]
    expect(slowest <= FAIL_FAST_MAX_S, f"{mode}: slowest failing request took {slowest:.2f}s (limit {FAIL_FAST_MAX_S}s)")
    expect(median <= FAIL_FAST_MEDIAN_S, f"{mode}: failing requests took {median * 1000:.0f} ms (median; limit {FAIL_FAST_MEDIAN_S * 1000:.0f} ms): not failing fast")

    # Recovery without a restart.
    first_ready = next((t + lat - t_up for t, s, lat, _ in ready if t >= t_up and s == 200), None)
    expect(first_ready is not None and first_ready <= RECOVER_LIMIT_S, f"{mode}: /readyz 200 again after {first_ready}s")
    after_ok = [r for r in results if r.started >= t_up and r.status in (200, 201)]
    first_ok = min((r.started + r.latency - t_up for r in after_ok), default=None)
    expect(first_ok is not None and first_ok <= RECOVER_LIMIT_S, f"{mode}: first successful request {first_ok}s after start")
    settled = [r for r in results if r.started >= t_up + RECOVER_LIMIT_S]
    bad_after = [(r.status, r.error) for r in settled if r.status not in (200, 201)]
    expect(settled and not bad_after, f"{mode}: failures after recovery: {bad_after[:5]}")
    return (
        f"{mode}: /readyz 503 {first_503:.2f}s after pg_ctl stop, {len(during)} requests during the outage all 503 problem+json "
        f"(median {median * 1000:.0f} ms, slowest {slowest * 1000:.0f} ms), /healthz 200 throughout, "
        f"ready {first_ready:.2f}s and serving {first_ok:.2f}s after PostgreSQL is back"
    )


def body(x: Experiment) -> str:
    if not h.postgres_available():
        raise h.Failure("PostgreSQL binaries not installed")
    pg = x.postgres()
    url = pg.create_database("outage")
    svc = x.service(url, name="outage").start()
    svc.wait_ready()
    ids = seed(svc.port, x.headers(), 50)
    acked: dict = {}
    parts = [outage_round(x, pg, svc, ids, mode, acked) for mode in ("fast", "immediate")]
    # Nothing acknowledged lost.
    lost = []
    for item_id, want in acked.items():
        status, _, b = h.request(svc.port, "GET", f"/v1/items/{item_id}", headers=x.headers())
        if status != 200 or json.loads(b) != want:
            lost.append((item_id, status))
    expect(not lost, f"{len(lost)} acknowledged writes lost or changed: {lost[:3]}")
    expect(svc.starts == 1 and svc.alive(), "the service was restarted or died")
    code = svc.stop()
    expect(code == 0, f"exit code {code} after SIGTERM")
    return "; ".join(parts) + f"; {len(acked)} acknowledged writes all intact, same process throughout"


if __name__ == "__main__":
    sys.exit(Experiment("db-outage", 120).run(body))
