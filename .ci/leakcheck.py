#!/usr/bin/env python3
"""Run one command (a .ci stage) and fail if it leaves any process running.

    python3 .ci/leakcheck.py [--grace SECONDS] -- COMMAND [ARGS...]

This process makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so every process
the command starts stays its descendant even after its parent exits: a daemon that double-forks
(pg_ctl start, a server started with `&` or `setsid`) is re-parented here instead of to init.
When the command has exited, whatever is still a child of this process was started by the
command and outlived it. After a short grace period (processes in the middle of exiting) each
leftover is listed with its pid, command line and working directory, then stopped (SIGTERM,
then SIGKILL), and the exit status is 1 (or the command's own status when that failed).
Processes that were already running before, or that other users start, are never looked at.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def reap_zombies():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def process_table():
    """pid -> (ppid, state) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(rest[1]), rest[0])
    return table


def leftovers():
    """Live descendants of this process (zombies reaped first)."""
    reap_zombies()
    table = process_table()
    me = os.getpid()
    found, todo = [], [me]
    while todo:
        parent = todo.pop()
        for pid, (ppid, state) in table.items():
            if ppid == parent and state != "Z":
                found.append(pid)
                todo.append(pid)
    return found


def describe(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = "?"
    return f"pid {pid}: {cmd or '[' + str(pid) + ']'}  (cwd {cwd})"


def stop(pids):
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not leftovers():
                return
            time.sleep(0.2)
        pids = leftovers()


def main():
    args = sys.argv[1:]
    grace = 5.0
    if args[:1] == ["--grace"]:
        grace, args = float(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit("usage: leakcheck.py [--grace S] -- COMMAND [ARGS...]")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"leakcheck: prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")

    child = subprocess.Popen(args)
    try:
        rc = child.wait()
    except KeyboardInterrupt:
        rc = child.wait()
        rc = rc if rc else 130

    deadline = time.monotonic() + grace
    left = leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftovers()
    if not left:
        sys.exit(rc)
    print(f"FAIL: `{' '.join(args)}` left {len(left)} process(es) running:", file=sys.stderr)
    for pid in left:
        print("  " + describe(pid), file=sys.stderr)
    stop(left)
    still = leftovers()
    print("  stopped them" + (f", except {still}" if still else ""), file=sys.stderr)
    sys.exit(rc or 1)


if __name__ == "__main__":
    main()
