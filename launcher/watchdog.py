"""Ends what a launcher started when the launcher dies, however it dies (SIGKILL included).

Every launcher (``simulate``, ``deploy run``, ``deploy superlink|supernode``) starts one watchdog
before any Flower process: a small process in its own session, so that a signal to the launcher's
process group does not reach it, and without the launcher's marker, so that the launcher's own
clean-up never stops it. It waits for the launcher's PID to end (a pidfd on Linux, polling
elsewhere), then stops every process carrying the launch marker or started in its private
working directory (the SuperLink and its children, the simulation runtime, Ray) and removes the
launcher's temporary folders. A launcher that ends normally cleans up itself and stops its watchdog.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import sys
import time
from pathlib import Path

import psutil

from launcher.processes import stop_processes


def wait_for_exit(pid: int, created: float) -> None:
    """Return once process ``pid`` (started at ``created``, so a reused PID does not fool us) has ended."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) > 1.0:
            return
    except psutil.NoSuchProcess:
        return
    if hasattr(os, "pidfd_open"):  # Linux >= 5.3: wakes the moment the process ends
        with contextlib.suppress(OSError):
            fd = os.pidfd_open(pid)
            try:
                select.select([fd], [], [])
            finally:
                os.close(fd)
            return
    while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher.watchdog", description=__doc__.splitlines()[0])
    p.add_argument("--pid", type=int, required=True, help="the launcher's PID")
    p.add_argument("--created", type=float, required=True, help="the launcher's start time (psutil create_time)")
    p.add_argument("--marker", required=True, help="the launch marker of every process it started")
    p.add_argument("--workdir", type=Path, help="the private working directory of what it started")
    p.add_argument("--remove", type=Path, action="append", default=[], help="a folder to remove afterwards")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the launcher ended normally and cleaned up
    wait_for_exit(args.pid, args.created)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # now nothing may interrupt the clean-up
    stop_processes(None, args.marker, args.workdir)
    for folder in args.remove:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
