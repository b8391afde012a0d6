#!/usr/bin/env python3
"""Backup drill: point-in-time restore of the service's PostgreSQL, rehearsed on a local
PostgreSQL 15 the way components/backups runs it in the cluster (base backup + continuous WAL
archive, restore to a target time), while the real service writes.

  1. PostgreSQL with archive_mode=on, archive_command copying each WAL segment to an archive
     directory (the object store's stand-in);
  2. the real binary (target/debug/shipshape, auth off) against it, and a client POSTing items
     one after another, recording each acknowledged item with its acknowledgement time;
  3. pg_basebackup while the writes go on;
  4. a 1.2 s pause in the writes; the target time is the middle of the pause, so every commit
     acknowledged before it happened before it, and every later one after it;
  5. more writes, a WAL switch, wait until the archive has every segment; stop everything;
  6. restore: the base backup into a new data directory, recovery.signal, restore_command
     from the archive, recovery_target_time, promote; start it;
  7. the binary against the restored database lists every item through the API: all items
     acknowledged before the target are there, none acknowledged after it.
Loopback only, bounded (3 minutes at most), and every process and directory it made is
removed on success and on failure. `--target-offset 1.0` moves the target past the pause to
show the check failing. Exit 0 on success, 1 on a failed check, 2 on a set-up error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "lib"))
import harness as h  # noqa: E402  (the Python glue's one PostgreSQL helper and readiness wait)

LIMIT_S = 180
T_START = time.monotonic()


class Fail(Exception):
    pass


def log(msg):
    print(f"  [{time.monotonic() - T_START:5.1f}s] {msg}", flush=True)


def left():
    rest = LIMIT_S - (time.monotonic() - T_START)
    if rest <= 0:
        raise Fail(f"drill exceeded {LIMIT_S}s")
    return rest


STARTED: list = []  # every service and cluster, stopped in main()'s finally whatever happened


def service(binary, db_url, workdir, name) -> h.Service:
    env = {"SHIPSHAPE_AUTH__ENABLED": "false", "SHIPSHAPE_RATE_LIMIT__ENABLED": "false",
           "SHIPSHAPE_LOG__LEVEL": "warn", "SHIPSHAPE_HTTP__DRAIN_DELAY": "0s"}
    svc = h.Service(binary, db_url, workdir, env=env, name=name).start()
    STARTED.append(svc)
    try:
        svc.wait_ready(timeout=min(60, left()), interval=0.1)
    except h.Failure as e:
        raise Fail(str(e)) from None
    return svc


def postgres(**kw) -> h.Postgres:
    pg = h.Postgres(**kw)
    STARTED.append(pg)
    return pg


class Writer(threading.Thread):
    """POSTs items one after another; records (id, acknowledgement time) per 201."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.acks: list[tuple[str, float]] = []
        self.errors: list[str] = []
        self.run_flag = threading.Event()
        self.run_flag.set()
        self.idle = threading.Event()
        self.stop_flag = threading.Event()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        n = 0
        while not self.stop_flag.is_set():
            if not self.run_flag.is_set():
                self.idle.set()
                time.sleep(0.005)
                continue
            self.idle.clear()
            n += 1
            body = json.dumps({"name": f"drill item {n}", "price": 1.25, "quantity": n})
            try:
                conn.request("POST", "/v1/items", body, {"content-type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                acked = time.time()
                if r.status != 201:
                    self.errors.append(f"POST -> {r.status} {data[:200]!r}")
                    continue
                self.acks.append((json.loads(data)["id"], acked))
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(f"POST: {e!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        self.idle.set()
        conn.close()

    def pause(self):
        self.run_flag.clear()
        if not self.idle.wait(10):
            raise Fail("writer did not pause")


def list_ids(port):
    ids, cursor = [], None
    while True:
        q = "/v1/items?limit=100" + (f"&cursor={cursor}" if cursor else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{q}", timeout=10) as r:
            page = json.loads(r.read())
        ids += [i["id"] for i in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            return ids
        left()


def drill(binary: Path, work: Path, target_offset: float):
    # The archive's path must be known before the cluster exists: it goes into its settings.
    archive = work / "wal-archive"
    archive.mkdir()
    pg = postgres(fsync=False, settings={
        "wal_level": "replica", "archive_mode": "on", "max_wal_senders": 4,
        "archive_command": f"'test ! -f {archive}/%f && cp %p {archive}/%f'"})
    pg.own(archive)
    pg.start()
    pg.create_database("shipshape")
    log(f"PostgreSQL 15 on 127.0.0.1:{pg.port}, archive_mode=on, WAL archived to {archive}")

    svc = service(binary, pg.url("shipshape"), work, "service")
    writer = Writer(svc.port)
    writer.start()
    log(f"service on 127.0.0.1:{svc.port}, client POSTing items")
    time.sleep(1.0)
    base = pg.dir / "base"
    pg.run(["pg_basebackup", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-D", str(base),
            "-X", "none", "-c", "fast"], timeout=min(120, left()))
    log(f"pg_basebackup done while writing ({len(writer.acks)} items acknowledged so far)")
    time.sleep(1.5)
    writer.pause()
    time.sleep(0.6)
    target = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=target_offset)
    time.sleep(0.6)
    writer.run_flag.set()
    log(f"writes paused 1.2 s; target time {target.isoformat()} in the middle of the pause")
    time.sleep(1.5)
    writer.stop_flag.set()
    writer.join(10)
    if writer.errors:
        raise Fail(f"the writer saw errors: {writer.errors[:5]}")
    svc.stop()
    seg = pg.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())").strip()
    pg.psql("postgres", "SELECT pg_switch_wal()")
    while not (archive / seg).exists():
        left()
        time.sleep(0.1)
    pg.stop()
    t = target.timestamp()
    before = [i for i, at in writer.acks if at < t]
    after = [i for i, at in writer.acks if at > t]
    log(f"{len(writer.acks)} items acknowledged: {len(before)} before the target, {len(after)} after; "
        f"{len(list(archive.iterdir()))} WAL files archived")
    if not before or not after:
        raise Fail("the drill needs items on both sides of the target")

    # restore into a new data directory
    restored = work / "restored"
    shutil.copytree(base, restored, symlinks=True)
    (restored / "recovery.signal").touch()
    stamp = target.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    with open(restored / "postgresql.auto.conf", "a") as f:
        f.write(f"\n# point-in-time restore\nrestore_command = 'cp {archive}/%f %p'\n"
                f"recovery_target_time = '{stamp}'\nrecovery_target_action = 'promote'\narchive_mode = off\n")
    pg2 = postgres(fsync=False, data=restored).start()
    while pg2.psql("postgres", "SELECT pg_is_in_recovery()").strip() != "f":
        left()
        time.sleep(0.1)
    stops = [ln for ln in pg2.log.read_text().splitlines()
             if "recovery stopping" in ln or "selected new timeline" in ln or "archive recovery complete" in ln]
    log("restored to " + stamp + ": " + " | ".join(ln.split("LOG:", 1)[-1].strip() for ln in stops))

    svc2 = service(binary, pg2.url("shipshape"), work, "service-restored")
    try:
        got = list_ids(svc2.port)
    finally:
        svc2.stop()
    pg2.stop()
    missing = sorted(set(before) - set(got))
    extra_after = sorted(set(after) & set(got))
    unknown = sorted(set(got) - set(before) - set(after))
    log(f"restored database, read through the API: {len(got)} items")
    if missing or extra_after or unknown or len(got) != len(set(got)):
        raise Fail(f"{len(missing)} acknowledged-before-target items missing (e.g. {missing[:3]}), "
                   f"{len(extra_after)} after-target items present (e.g. {extra_after[:3]}), {len(unknown)} unknown")
    log(f"ok: all {len(before)} items acknowledged before the target are there, none of the {len(after)} after it")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.environ.get("SHIPSHAPE_BIN", str(REPO / "target" / "debug" / "shipshape")))
    ap.add_argument("--target-offset", type=float, default=0.0, help="seconds added to the target (to see it fail)")
    args = ap.parse_args()
    binary = Path(args.binary).resolve()
    if not os.access(binary, os.X_OK):
        print(f"backup drill: {binary} missing (cargo build -p shipshape)", file=sys.stderr)
        return 2
    if not (h.PG_BIN / "initdb").exists():
        print(f"backup drill: no PostgreSQL binaries in {h.PG_BIN}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="shipshape-drill-"))
    os.chmod(work, 0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        drill(binary, work, args.target_offset)
        return 0
    except (Fail, h.Failure, subprocess.SubprocessError) as e:
        print(f"backup drill FAILED: {e}", file=sys.stderr)
        for x in STARTED:
            p = x.log if isinstance(x, h.Postgres) else x.log_path
            if p.exists():
                print(f"--- {p.name} (tail)\n" + p.read_text(errors="replace")[-1500:], file=sys.stderr)
        return 1
    finally:
        for x in reversed(STARTED):
            if isinstance(x, h.Postgres):
                x.destroy()
            else:
                x.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
