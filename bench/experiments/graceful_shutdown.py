#!/usr/bin/env python3
"""Experiment 1: graceful shutdown under load (SQLite; PostgreSQL is covered by service/tests/api/process.rs).

service/tests/api/process.rs already sends SIGTERM to the real binary with 4 sequential writers. This
goes further: wrk drives the 90/10 GET/POST mix as fast as it can on 64 keep-alive connections
while 16 accounting clients POST uniquely named items, and we check, during and after SIGTERM:

  * /readyz answers 503 within 250 ms of the signal and for the whole drain delay;
  * every request the server accepted got its answer: the server logs one "request completed"
    line per request it processed, so the count of wrk requests in the log must equal the count
    of answers wrk received (a lost answer shows as a logged request wrk never saw), no answer is
    a non-2xx and none timed out; the accounting clients' requests each got 201, or were refused
    at connect (listener closed), or got no answer and were provably never processed (their
    name is not in the database after a restart);
  * every 201-acknowledged item is stored after the restart;
  * the process exits 0 within drain delay + grace.
"""

import asyncio
import signal
import sys
import time

from common import Experiment, Wrk, aioload, expect, h, require_tools, say, seed

DRAIN, GRACE = 2.0, 10.0
WRK_UA = "shipshape-graceful-wrk"


async def accounting_clients(port: int, headers: dict, stop: asyncio.Event, n: int = 16):
    results = []

    async def one(w: int):
        conn = aioload.Conn(port)
        i = 0
        while not stop.is_set():
            i += 1
            name = f"graceful w{w} n{i}"
            body = aioload.json_body(h.item_body(name, i))
            r = await conn.request("POST", "/v1/items", dict(headers, **{"Content-Type": "application/json"}), body, timeout=15, tag=name)
            results.append(r)
            if r.error:
                conn.close()
                await asyncio.sleep(0.02)
        conn.close()

    await asyncio.gather(*(one(w) for w in range(n)))
    return results


def body(x: Experiment) -> str:
    require_tools("wrk")
    url = f"sqlite://{x.dir}/data/shipshape.db"
    env = {"SHIPSHAPE_HTTP__DRAIN_DELAY": f"{DRAIN}s", "SHIPSHAPE_HTTP__SHUTDOWN_GRACE": f"{GRACE}s"}
    svc = x.service(url, env, name="graceful").start()
    svc.wait_ready()
    ids = seed(svc.port, x.headers(), 100)
    (x.dir / "ids").write_text("\n".join(ids) + "\n")

    async def scenario():
        stop, ready_stop = asyncio.Event(), asyncio.Event()
        readyz = []
        t_wrk = time.monotonic()
        wrk = Wrk(svc.port, "mix", 64, 30, {"BENCH_IDS": str(x.dir / "ids"), "BENCH_TOKEN": x.auth.token or ""}, WRK_UA)
        clients = asyncio.create_task(accounting_clients(svc.port, x.headers(), stop))
        poller = asyncio.create_task(aioload.poll(svc.port, "/readyz", ready_stop, 0.02, readyz, timeout=1.0, headers=x.headers()))
        await asyncio.sleep(2.0)
        t_term = time.monotonic()
        svc.signal(signal.SIGTERM)
        code = await asyncio.to_thread(svc.wait_exit, DRAIN + GRACE + 5)
        elapsed = time.monotonic() - t_term
        ready_stop.set()
        await asyncio.sleep(0.5)  # clients see the closed listener
        stop.set()
        results = await clients
        await poller
        summary = await asyncio.to_thread(wrk.stop)
        return t_term, code, elapsed, results, readyz, summary, t_term + elapsed - t_wrk

    t_term, code, elapsed, results, readyz, wrk_sum, served_s = asyncio.run(scenario())

    # Exit.
    expect(code == 0, f"exit code {code} after SIGTERM (want 0)\n{svc.tail()}")
    expect(elapsed <= DRAIN + GRACE + 1, f"exited {elapsed:.1f}s after SIGTERM (limit {DRAIN + GRACE + 1}s)")

    # Readiness during the drain.
    after = [(t - t_term, s) for t, s, _, _ in readyz if t >= t_term]
    first_503 = next((dt for dt, s in after if s == 503), None)
    expect(first_503 is not None and first_503 <= 0.25, f"/readyz did not turn 503 within 250 ms (first 503 at {first_503})")
    in_drain = [s for dt, s in after if first_503 <= dt <= DRAIN - 0.1]
    expect(in_drain and all(s == 503 for s in in_drain), f"/readyz during the drain: {sorted(set(in_drain))} (want only 503)")

    # wrk: every processed request answered.
    errs = wrk_sum["errors"]
    expect(errs["status"] == 0, f"wrk saw {errs['status']} non-2xx/3xx answers")
    expect(errs["timeout"] == 0, f"wrk saw {errs['timeout']} timeouts")
    logged = sum(1 for line in svc.log_lines() if line.get("user_agent") == WRK_UA and "status" in line)
    if logged == 0:
        raise h.Failure("no request lines with user_agent in the server log: cannot account (log format changed?)")
    expect(
        logged == wrk_sum["requests"],
        f"server processed {logged} wrk requests but wrk received {wrk_sum['requests']} answers: "
        f"{logged - wrk_sum['requests']} answers lost (wrk errors {errs})",
    )

    # Accounting clients.
    bad = [r for r in results if r.status is not None and r.status != 201]
    expect(not bad, f"accepted requests failed: {[(r.tag, r.status, r.body[:120]) for r in bad[:5]]}")
    hung = [r for r in results if r.error in ("timeout", "connect_timeout")]
    expect(not hung, f"{len(hung)} requests hung")
    acked = {r.tag: r.json() for r in results if r.status == 201}
    refused = [r for r in results if r.error == "refused"]
    unanswered = [r for r in results if r.error and r.error != "refused"]
    expect(len(acked) > 100, f"load was not flowing: {len(acked)} acknowledged")

    # Restart on the same database: acknowledged items stored, unanswered ones never processed.
    again = x.service(url, name="graceful-after").start()
    again.wait_ready()
    for name, item in acked.items():
        status, _, b = h.request(again.port, "GET", f"/v1/items/{item['id']}", headers=x.headers())
        expect(status == 200, f"acknowledged item {name} missing after restart ({status})")
    processed_unanswered = []
    for r in unanswered:
        status, _, b = h.request(again.port, "GET", "/v1/items?limit=5&q=" + r.tag.replace(" ", "%20"), headers=x.headers())
        if any(i["name"] == r.tag for i in __import__("json").loads(b)["items"]):
            processed_unanswered.append(r.tag)
    expect(not processed_unanswered, f"processed but unanswered (answer lost): {processed_unanswered[:5]}")
    again.stop()
    wrk_rps = wrk_sum["requests"] / served_s
    return (
        f"exit 0 {elapsed:.2f}s after SIGTERM (drain {DRAIN:.0f}s, grace {GRACE:.0f}s); /readyz 503 after {first_503 * 1000:.0f} ms; "
        f"wrk {wrk_sum['requests']} answers (~{wrk_rps:.0f} req/s until exit) = {logged} processed, 0 non-2xx, "
        f"{errs['connect'] + errs['read'] + errs['write']} connection errors (refused/reset, none processed); "
        f"accounting clients {len(acked)} x 201 all stored, {len(refused)} refused, {len(unanswered)} unanswered & never processed"
    )


if __name__ == "__main__":
    sys.exit(Experiment("graceful-shutdown", 90).run(body))
