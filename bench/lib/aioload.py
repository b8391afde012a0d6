"""A small asyncio HTTP/1.1 client that accounts for every request (stdlib only).

The load generators (wrk, oha) say how many requests failed; the reliability experiments also
need to know *how* each one failed: refused before the server accepted the connection, closed
before any answer, timed out, or answered with which status and body. Keep-alive connections,
reconnect on `Connection: close` or an error. Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    method: str
    path: str
    started: float  # time.monotonic()
    latency: float
    status: int | None = None  # None: no HTTP answer
    error: str | None = None  # refused | connect_timeout | closed_before_answer | timeout | broken_answer | ...
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    reused: bool = False  # sent on a kept-alive connection (vs a fresh one)
    tag: str = ""

    def json(self):
        return json.loads(self.body)


class Conn:
    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0

    def close(self, abort: bool = False) -> None:
        if self.writer is not None:
            try:
                if abort:
                    self.writer.transport.abort()
                else:
                    self.writer.close()
            except Exception:
                pass
        self.reader = self.writer = None
        self.used = 0

    async def request(
        self,
        method: str,
        path: str,
        headers: dict | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
        tag: str = "",
    ) -> Result:
        t0 = time.monotonic()
        res = Result(method, path, t0, 0.0, tag=tag)
        if self.writer is None:
            try:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), connect_timeout
                )
            except asyncio.TimeoutError:
                res.error, res.latency = "connect_timeout", time.monotonic() - t0
                return res
            except ConnectionRefusedError:
                res.error, res.latency = "refused", time.monotonic() - t0
                return res
            except OSError as e:
                res.error, res.latency = f"connect:{e.__class__.__name__}", time.monotonic() - t0
                return res
        res.reused = self.used > 0
        self.used += 1
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        got_any = False
        try:
            self.writer.write(raw)
            await self.writer.drain()

            async def read_answer():
                nonlocal got_any
                head = await self.reader.readuntil(b"\r\n\r\n")
                got_any = True
                status_line, *hdr_lines = head.decode("latin-1").split("\r\n")
                status = int(status_line.split(" ", 2)[1])
                hdrs = {}
                for line in hdr_lines:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        hdrs[k.strip().lower()] = v.strip()
                if "content-length" in hdrs:
                    data = await self.reader.readexactly(int(hdrs["content-length"]))
                elif hdrs.get("transfer-encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                        chunk = await self.reader.readexactly(size + 2)
                        if size == 0:
                            break
                        data += chunk[:-2]
                elif status in (204, 304) or method == "HEAD":
                    data = b""
                else:
                    data = await self.reader.read()
                return status, hdrs, data

            res.status, res.headers, res.body = await asyncio.wait_for(read_answer(), timeout)
            if res.headers.get("connection", "").lower() == "close":
                self.close()
        except asyncio.TimeoutError:
            res.error = "timeout"
            self.close(abort=True)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError, IndexError) as e:
            if isinstance(e, asyncio.IncompleteReadError) and not e.partial and not got_any:
                res.error = "closed_before_answer"
            elif isinstance(e, ConnectionResetError) and not got_any:
                res.error = "reset_before_answer"
            else:
                res.error = f"broken_answer:{e.__class__.__name__}"
            self.close(abort=True)
        res.latency = time.monotonic() - t0
        return res


def json_body(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def poll(port: int, path: str, until: asyncio.Event, interval: float, out: list, timeout: float = 2.0, headers=None):
    """Appends (monotonic time, status or None, latency) for `path` every `interval` until `until`."""
    conn = Conn(port)
    while not until.is_set():
        r = await conn.request("GET", path, headers=headers, timeout=timeout)
        out.append((r.started, r.status, r.latency, r.error))
        if r.error:
            conn.close()
        try:
            await asyncio.wait_for(until.wait(), interval)
        except asyncio.TimeoutError:
            pass
    conn.close()
