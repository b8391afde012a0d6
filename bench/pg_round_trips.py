#!/usr/bin/env python3
"""PostgreSQL round trips and statement preparations per API request, counted on the wire.

A TCP relay between `shipshape serve` and a throwaway PostgreSQL reads the frontend protocol
the service sends (every message is a type byte and a length) and counts, per request:
- round trips: messages after which the client waits for the server (Sync, Query, Flush);
- pings: a Sync with nothing before it. sqlx sends one on every connection returned to its
  pool (`PoolConnection::return_to_pool`, not configurable), after the response; our own
  pool option pings only a connection that sat idle for a second;
- parses: Parse messages of a statement its connection had already prepared, i.e. a missed
  statement cache. With prepared statements cached per connection, there are none. The first
  Parse of a statement on a connection (the pool hands requests to connections in an order
  that load changes, so the warm-up cannot reach every pair) is counted apart, and the round
  trip it costs (Parse, Describe, Sync) is not charged to the request.

    python3 bench/pg_round_trips.py [--bin target/release/shipshape] [--requests 200] [--check]

Each request kind runs `--requests` times, one at a time over one keep-alive connection, after a
warm-up of as many per pool connection (so that every connection has prepared its statements);
the figures are totals over the measured requests divided by their number. `--check` fails
unless the happy path of every kind takes at most its budget of round trips and no parses.
The service runs as shipped (auth on, JSON logs) but for rate limiting. It needs PostgreSQL's
binaries (SHIPSHAPE_PG_BIN); the relay is the only thing between the two, on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import socket
import struct
import sys
import tempfile
import threading

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "lib"))
import harness as h  # noqa: E402

# Frontend messages after which the client waits for the backend's answer.
WAITS = {b"S": "Sync", b"Q": "Query", b"H": "Flush"}
# Untyped start-up packets that are followed by another start-up packet: SSLRequest, GSSENCRequest.
ENCRYPTION_REQUESTS = {80877103, 80877104}
# The round trips each request kind may take on its happy path.
BUDGET = {
    "POST": 1,
    "POST with a new Idempotency-Key": 1,
    "POST replayed (same key)": 1,
    "GET by id": 1,
    "GET list page (20)": 1,
    "PUT": 1,
    # The entity-tag list of If-Match (RFC 9110: `*`, several tags) is matched against the
    # current item read first, then the UPDATE is conditional on that version.
    "PUT with If-Match": 2,
    "PATCH": 2,  # read the current item, then a conditional update
    "DELETE": 1,
    "GET /readyz": 1,
}


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.round_trips = 0
        self.pings = 0
        self.parses = 0
        self.first_parses = 0
        self.statements: list[str] = []
        # (relayed connection, query text): what each connection has prepared so far.
        self.prepared: set[tuple[int, bytes]] = set()

    def reset(self):
        with self.lock:
            self.round_trips = self.pings = self.parses = self.first_parses = 0
            self.statements = []

    def take(self) -> tuple[int, int, int, int, list[str]]:
        """Round trips (less one per first preparation), pings, repeated and first parses."""
        with self.lock:
            return (self.round_trips - self.first_parses, self.pings, self.parses,
                    self.first_parses, list(self.statements))

    def message(self, conn: int, kind: bytes, payload: bytes, alone: bool):
        """One frontend message on relayed connection `conn`; `alone` when nothing came since
        the last wait on that connection."""
        with self.lock:
            if kind == b"S" and alone:
                self.pings += 1
            elif kind in WAITS:
                self.round_trips += 1
            elif kind == b"P":
                # Parse: statement name (C string), query (C string), parameter types.
                _, _, rest = payload.partition(b"\0")
                query = rest.partition(b"\0")[0]
                if (conn, query) in self.prepared:
                    self.parses += 1
                    self.statements.append(query.decode(errors="replace")[:80])
                else:
                    self.prepared.add((conn, query))
                    self.first_parses += 1


class Relay:
    """Listens on 127.0.0.1:<port> and relays every connection to `upstream`, counting."""

    def __init__(self, upstream: int, counter: Counter):
        self.upstream = upstream
        self.counter = counter
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
            server.settimeout(None)
            threading.Thread(target=self._frontend, args=(client, server), daemon=True).start()
            threading.Thread(target=self._backend, args=(server, client), daemon=True).start()

    def _frontend(self, src: socket.socket, dst: socket.socket):
        buf, started, alone = b"", False, True
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
                buf += chunk
                while True:
                    if not started:
                        if len(buf) < 8:
                            break
                        (n,) = struct.unpack("!I", buf[:4])
                        if len(buf) < n:
                            break
                        (code,) = struct.unpack("!I", buf[4:8])
                        started = code not in ENCRYPTION_REQUESTS
                        buf = buf[n:]
                        continue
                    if len(buf) < 5:
                        break
                    (n,) = struct.unpack("!I", buf[1:5])
                    if len(buf) < 1 + n:
                        break
                    self.counter.message(id(src), buf[:1], buf[5 : 1 + n], alone)
                    alone = buf[:1] in WAITS
                    buf = buf[1 + n :]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _backend(src: socket.socket, dst: socket.socket):
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", help="the shipshape binary (default: target/release/shipshape)")
    ap.add_argument("--requests", type=int, default=200, help="measured requests per kind")
    ap.add_argument("--connections", type=int, default=4, help="database.max_connections")
    ap.add_argument("--check", action="store_true", help="fail when a kind exceeds its budget or parses")
    args = ap.parse_args()
    if not h.postgres_available():
        print("PostgreSQL binaries not found (SHIPSHAPE_PG_BIN)", file=sys.stderr)
        return 2
    binary = h.find_binary(args.bin)
    work = pathlib.Path(tempfile.mkdtemp(prefix="shipshape-rt."))
    auth = h.setup_auth(binary, work)
    pg = h.Postgres(fsync=False).start()
    counter = Counter()
    svc = None
    try:
        relay = Relay(pg.port, counter)
        url = pg.create_database("round_trips").replace(f":{pg.port}/", f":{relay.port}/")
        env = dict(auth.env)
        env["SHIPSHAPE_DATABASE__MAX_CONNECTIONS"] = str(args.connections)
        env["SHIPSHAPE_DATABASE__MIN_CONNECTIONS"] = str(args.connections)
        svc = h.Service(binary, url, work, env=env).start()
        svc.wait_ready(timeout=60)
        rows = measure(svc.port, auth.headers(), counter, args.requests, args.connections)
    finally:
        if svc:
            svc.stop()
        pg.destroy()
    print("| request | round trips | budget | sqlx's pings | parses | first preparations |")
    print("|---|---|---|---|---|---|")
    failed = []
    for kind, (rt, pings, parses, first, statements) in rows.items():
        print(f"| {kind} | {rt:.2f} | {BUDGET[kind]} | {pings:.2f} | {parses:.2f} | {first} |")
        # A release ping that lands across a counter reset can blur a figure by a percent or two.
        if rt > BUDGET[kind] + 0.05 or parses > 0:
            failed.append(f"{kind}: {rt:.2f} round trips (budget {BUDGET[kind]}), {parses:.2f} parses {statements[:3]}")
    print(f"\n{args.requests} requests per kind, one at a time; {args.connections} pool connections; {'; '.join(auth.notes)}")
    if args.check and failed:
        print("over budget:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def measure(port: int, auth: dict, counter: Counter, n: int, connections: int) -> dict:
    """Runs every kind: warm-up, then `n` measured requests; returns per-request averages."""
    import http.client as httpc

    conn = httpc.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(method: str, path: str, body=None, headers=None, expect=(200, 201, 204)):
        hdrs = {"User-Agent": h.PROBE_UA, **auth, **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        payload = r.read()
        if r.status not in expect:
            raise h.Failure(f"{method} {path}: {r.status} {payload[:200]!r}")
        return r, payload

    seq = iter(range(10**9))

    def create(**headers):
        r, payload = call("POST", "/v1/items", h.item_body(f"rt-{next(seq)}"), headers)
        return json.loads(payload), r.getheader("etag")

    made: list = []
    replay_key = "round-trips-replay"
    call("POST", "/v1/items", h.item_body("rt-replay"), {"Idempotency-Key": replay_key})

    def op(kind: str):
        if kind == "POST":
            made.append(create()[0]["id"])
        elif kind == "POST with a new Idempotency-Key":
            made.append(create(**{"Idempotency-Key": f"rt-key-{next(seq)}"})[0]["id"])
        elif kind == "POST replayed (same key)":
            call("POST", "/v1/items", h.item_body("rt-replay"), {"Idempotency-Key": replay_key})
        elif kind == "GET by id":
            call("GET", f"/v1/items/{made[next(seq) % len(made)]}")
        elif kind == "GET list page (20)":
            call("GET", "/v1/items?limit=20")
        elif kind == "PUT":
            item, _ = create()
            return ("PUT", f"/v1/items/{item['id']}", h.item_body("rt-put", 7), None)
        elif kind == "PUT with If-Match":
            item, etag = create()
            return ("PUT", f"/v1/items/{item['id']}", h.item_body("rt-put", 7), {"If-Match": etag})
        elif kind == "PATCH":
            item, _ = create()
            return ("PATCH", f"/v1/items/{item['id']}", {"quantity": 3}, {"Content-Type": "application/merge-patch+json"})
        elif kind == "DELETE":
            item, _ = create()
            return ("DELETE", f"/v1/items/{item['id']}", None, None)
        elif kind == "GET /readyz":
            call("GET", "/readyz")
        return None

    rows = {}
    for kind in BUDGET:
        total_rt = total_pings = total_parses = total_first = 0
        statements: list[str] = []
        for i in range(n + 2 * connections):
            counter.reset()
            pending = op(kind)
            if pending:  # the setup request is not counted; the request under test is
                counter.reset()
                call(*pending)
            rt, pings, parses, first, stmts = counter.take()
            if i >= 2 * connections:
                total_rt += rt
                total_pings += pings
                total_parses += parses
                total_first += first
                statements += stmts
        rows[kind] = (total_rt / n, total_pings / n, total_parses / n, total_first, statements)
    conn.close()
    return rows


if __name__ == "__main__":
    sys.exit(main())
