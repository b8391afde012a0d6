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
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

PGBIN = Path(os.environ.get("SHIPSHAPE_PG_BIN", "/usr/lib/postgresql/15/bin"))
REPO = Path(__file__).resolve().parents[2]
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


AS_PG = []
if os.geteuid() == 0:
    AS_PG = ["runuser", "-u", "postgres", "--"]


def pg(*cmd, check=True, timeout=60, bounded=True):
    r = subprocess.run(AS_PG + [str(PGBIN / cmd[0]), *cmd[1:]], capture_output=True, text=True,
                       timeout=min(timeout, left()) if bounded else timeout)
    if check and r.returncode != 0:
        raise Fail(f"{cmd[0]} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r.stdout


def sql(port, sock, query, db="postgres"):
    return pg("psql", "-h", sock, "-p", str(port), "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1",
              "-qAtc", query).strip()


STARTED: list["Service"] = []  # stopped in main()'s finally, whatever happened


class Service:
    def __init__(self, binary, db_url, workdir, name):
        self.port = free_port()
        env = {"PATH": "/usr/bin:/bin", "SHIPSHAPE_AUTH__ENABLED": "false", "SHIPSHAPE_RATE_LIMIT__ENABLED": "false",
               "SHIPSHAPE_DATABASE__URL": db_url, "SHIPSHAPE_HTTP__LISTEN": f"127.0.0.1:{self.port}",
               "SHIPSHAPE_LOG__LEVEL": "warn", "SHIPSHAPE_HTTP__DRAIN_DELAY": "0s"}
        self.log = open(workdir / f"{name}.log", "wb")
        self.proc = subprocess.Popen([str(binary), "serve"], env=env, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        STARTED.append(self)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fail(f"service exited {self.proc.returncode}: {(workdir / f'{name}.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise Fail("service never became ready")

    def stop(self):
        if self.log.closed:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


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


def start_pg(data, port, sock, logfile):
    pg("pg_ctl", "-D", str(data), "-l", str(logfile), "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1",
       "-w", "-t", "60", "start", timeout=90)


def stop_pg(data):
    if (data / "postmaster.pid").exists():
        pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop", check=False, timeout=40, bounded=False)
    if (data / "postmaster.pid").exists():
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "stop", check=False, timeout=40, bounded=False)


def drill(binary: Path, work: Path, target_offset: float):
    sock = work / "sock"
    archive, data, base, restored = work / "wal-archive", work / "data", work / "base", work / "restored"
    for d in (sock, archive):
        d.mkdir()
    if AS_PG:
        for d in (work, sock, archive):
            shutil.chown(d, "postgres")
    pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
    with open(data / "postgresql.conf", "a") as f:
        f.write("\n# backup drill\nwal_level = replica\narchive_mode = on\n"
                f"archive_command = 'test ! -f {archive}/%f && cp %p {archive}/%f'\n"
                "max_wal_senders = 4\nfsync = off\n")
    port = free_port()
    start_pg(data, port, sock, work / "pg.log")
    sql(port, sock, "CREATE DATABASE shipshape")
    log(f"PostgreSQL 15 on 127.0.0.1:{port}, archive_mode=on, WAL archived to {archive}")

    svc = Service(binary, f"postgres://postgres@127.0.0.1:{port}/shipshape", work, "service")
    writer = Writer(svc.port)
    writer.start()
    log(f"service on 127.0.0.1:{svc.port}, client POSTing items")
    time.sleep(1.0)
    pg("pg_basebackup", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-D", str(base), "-X", "none",
       "-c", "fast", timeout=120)
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
    seg = sql(port, sock, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    sql(port, sock, "SELECT pg_switch_wal()")
    while not (archive / seg).exists():
        left()
        time.sleep(0.1)
    stop_pg(data)
    t = target.timestamp()
    before = [i for i, at in writer.acks if at < t]
    after = [i for i, at in writer.acks if at > t]
    log(f"{len(writer.acks)} items acknowledged: {len(before)} before the target, {len(after)} after; "
        f"{len(list(archive.iterdir()))} WAL files archived")
    if not before or not after:
        raise Fail("the drill needs items on both sides of the target")

    # restore into a new data directory
    shutil.copytree(base, restored, symlinks=True)
    if AS_PG:
        subprocess.run(["chown", "-R", "postgres", str(restored)], check=True)
    os.chmod(restored, 0o700)
    (restored / "recovery.signal").touch()
    if AS_PG:
        shutil.chown(restored / "recovery.signal", "postgres")
    stamp = target.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    with open(restored / "postgresql.auto.conf", "a") as f:
        f.write(f"\n# point-in-time restore\nrestore_command = 'cp {archive}/%f %p'\n"
                f"recovery_target_time = '{stamp}'\nrecovery_target_action = 'promote'\narchive_mode = off\n")
    port2 = free_port()
    start_pg(restored, port2, sock, work / "restored.log")
    while sql(port2, sock, "SELECT pg_is_in_recovery()") != "f":
        left()
        time.sleep(0.1)
    stops = [ln for ln in (work / "restored.log").read_text().splitlines()
             if "recovery stopping" in ln or "selected new timeline" in ln or "archive recovery complete" in ln]
    log("restored to " + stamp + ": " + " | ".join(ln.split("LOG:", 1)[-1].strip() for ln in stops))

    svc2 = Service(binary, f"postgres://postgres@127.0.0.1:{port2}/shipshape", work, "service-restored")
    try:
        got = list_ids(svc2.port)
    finally:
        svc2.stop()
    stop_pg(restored)
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
    if not (PGBIN / "initdb").exists():
        print(f"backup drill: no PostgreSQL binaries in {PGBIN}", file=sys.stderr)
        return 2
    if AS_PG and subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    work = Path(tempfile.mkdtemp(prefix="shipshape-drill-"))
    os.chmod(work, 0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        drill(binary, work, args.target_offset)
        return 0
    except Fail as e:
        print(f"backup drill FAILED: {e}", file=sys.stderr)
        for f in ("pg.log", "restored.log", "service.log", "service-restored.log"):
            if (work / f).exists():
                print(f"--- {f} (tail)\n" + (work / f).read_text(errors="replace")[-1500:], file=sys.stderr)
        return 1
    finally:
        for s in STARTED:
            s.stop()
        for d in ("data", "restored"):
            if (work / d / "postmaster.pid").exists():
                stop_pg(work / d)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
