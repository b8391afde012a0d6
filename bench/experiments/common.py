"""Shared set-up for the reliability experiments: binary, auth, temp dirs, wrk, result lines.

Each experiment is a script that prints progress lines starting with "  " and ends with exactly
one result line "<name>: PASS ..." or "<name>: FAIL ...", exiting 0 only on PASS.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))

import aioload  # noqa: E402,F401  (re-exported for the experiments)
import harness as h  # noqa: E402

LUA = HERE.parent / "lua" / "shipshape.lua"


def say(msg: str) -> None:
    print(f"  {msg}", flush=True)


class Experiment:
    """Context: a temp dir, the binary, auth; a hard time limit; one result line at the end."""

    def __init__(self, name: str, limit_s: int):
        self.name = name
        self.limit_s = limit_s
        self.binary = h.find_binary()
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=f"shipshape-{name}."))
        self.feats = h.features(self.binary)
        self.auth = h.setup_auth(self.binary, self.dir, self.feats)
        self.cleanups: list = []
        self.t0 = time.monotonic()

    def headers(self, extra: dict | None = None) -> dict:
        d = {"User-Agent": f"shipshape-{self.name}"}
        d.update(self.auth.headers())
        d.update(extra or {})
        return d

    def service(self, db_url: str, env: dict | None = None, **kw) -> h.Service:
        e = dict(self.auth.env)
        e.update(env or {})
        svc = h.Service(self.binary, db_url, self.dir, env=e, **kw)
        self.cleanups.append(svc.kill)
        return svc

    def postgres(self, fsync: bool = False) -> h.Postgres:
        pg = h.Postgres(fsync=fsync).start()
        self.cleanups.append(pg.destroy)
        return pg

    def run(self, body) -> int:
        def on_alarm(*_):
            raise TimeoutError(f"took longer than {self.limit_s}s")

        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(self.limit_s)
        say(f"binary {self.binary}; {'; '.join(self.auth.notes)}")
        rc = 1
        try:
            summary = body(self)
            print(f"{self.name}: PASS {summary} ({time.monotonic() - self.t0:.0f}s)", flush=True)
            rc = 0
        except h.Failure as e:
            print(f"{self.name}: FAIL {e}", flush=True)
        except Exception as e:  # a broken experiment is a failure too, with its traceback
            traceback.print_exc()
            print(f"{self.name}: FAIL {e.__class__.__name__}: {e}", flush=True)
        finally:
            signal.alarm(0)
            for c in reversed(self.cleanups):
                try:
                    c()
                except Exception:
                    pass
            if rc == 0 or not os.environ.get("SHIPSHAPE_KEEP_FAILED"):
                shutil.rmtree(self.dir, ignore_errors=True)
            else:
                print(f"  kept {self.dir} for inspection", flush=True)
        return rc


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise h.Failure(msg)


class Wrk:
    """wrk in the background with the shared Lua script; stop() (SIGINT) returns its summary."""

    def __init__(self, port: int, mode: str, conns: int, seconds: int, env: dict, ua: str, cpu: int | None = None):
        e = dict(os.environ)
        e.update(env)
        e.update({"BENCH_MODE": mode, "BENCH_UA": ua})
        self.cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s", "-s", str(LUA), f"http://127.0.0.1:{port}"]
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )

    def stop(self, timeout: float = 30) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=timeout)
        for line in out.splitlines():
            if line.startswith("WRKJSON "):
                return json.loads(line[len("WRKJSON "):])
        raise h.Failure(f"wrk printed no summary ({self.proc.returncode}): {err.strip()[-300:]}")

    def wait(self, timeout: float) -> dict:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.stop()


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise h.Failure(f"missing tools: {', '.join(missing)} (.ci/reliability.sh installs them)")


def seed(port: int, headers: dict, n: int, prefix: str = "seed") -> list[str]:
    ids = []
    for i in range(n):
        status, _, body = h.request(port, "POST", "/v1/items", h.item_body(f"{prefix} {i}", i), headers=headers)
        if status != 201:
            raise h.Failure(f"seeding: {status} {body[:200]!r}")
        ids.append(json.loads(body)["id"])
    return ids
