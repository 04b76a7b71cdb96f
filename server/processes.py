"""Starting and stopping Flower's processes: the environment they need, ports, logs, and a
clean stop of everything a fedrobust command started (also on Ctrl-C, SIGTERM or error)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from fedrobust.errors import FedrobustError

MARKER = "FEDROBUST_LAUNCH_ID"
PREFIX = "[fedrobust] "


def flower_env(flwr_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower processes: our venv first on PATH, no telemetry, no `uv sync`."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text()[-600:] if log_file.exists() else ""
            raise FedrobustError(f"the SuperLink exited at start (code {proc.returncode}); see {log_file}: "
                                 + " ".join(tail.split())[-300:])
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise FedrobustError(f"the SuperLink did not open port {port} within {timeout:.0f}s; see {log_file}")


def _marked(marker: str, workdir: Path | None = None) -> list[psutil.Process]:
    """Processes carrying our marker in their environment or started in our private workdir.

    Both are needed: Ray's helpers rename themselves with setproctitle, which can overwrite
    what /proc shows as their environment, but they keep the working directory they inherited.
    """
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(MARKER) == marker or (workdir is not None and Path(proc.cwd()) == workdir):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    # and their descendants: a child may be started with a fresh environment and working directory
    for proc in list(found):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            found += [c for c in proc.children(recursive=True) if c.pid != os.getpid() and c not in found]
    return found


def stop_processes(root: subprocess.Popen | None, marker: str, workdir: Path | None = None,
                   grace: float = 15.0) -> None:
    """SIGTERM the tree of ``root`` and every process with our marker; SIGKILL what remains.

    Repeats until no marked process is left: Ray may still be forking helpers (dashboard and
    runtime-env agents) while we stop it.
    """
    procs: dict[int, psutil.Process] = {}
    if root is not None and root.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            top = psutil.Process(root.pid)
            procs[top.pid] = top
            procs.update({p.pid: p for p in top.children(recursive=True)})
    procs.update({p.pid: p for p in _marked(marker, workdir)})
    _signal_all(procs.values(), signal.SIGTERM)
    _, alive = psutil.wait_procs(list(procs.values()), timeout=grace)
    _signal_all(alive, signal.SIGKILL)
    deadline = time.monotonic() + 30
    quiet = 0
    while quiet < 3 and time.monotonic() < deadline:  # three empty scans in a row
        left = _marked(marker, workdir)
        quiet = 0 if left else quiet + 1
        _signal_all(left, signal.SIGKILL)
        psutil.wait_procs(left, timeout=2)
        time.sleep(0.3)
    if root is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            root.wait(timeout=5)


def _signal_all(procs, sig: int) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.send_signal(sig)


def write_connection(flwr_home: Path, name: str, connection: dict[str, Any]) -> None:
    """Add or replace one SuperLink connection in ``$FLWR_HOME/config.toml``, keeping the others.

    A ``local`` connection (Flower's own local simulation SuperLink) is kept as the default so a
    plain ``flwr run .`` works as Flower users expect.
    """
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    conf = tomllib.loads(path.read_text()) if path.exists() else {}
    links = conf.setdefault("superlink", {})
    links.setdefault("default", "local")
    links.setdefault("local", {"address": ":local:"})
    links[name] = connection
    path.write_text(tomli_w.dumps(conf))


def last_error(log_file: Path) -> str:
    """The most telling line of a Flower log: the last error message or exception."""
    if not log_file.exists():
        return "no log"
    lines = [" ".join(line.strip(" │╭╮╰╯─").split()) for line in log_file.read_text(errors="replace").splitlines()]
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line.startswith("fedrobust.errors."):  # ours: already one line for the user
            return line.split(": ", 1)[-1]
        if line.startswith(("FedrobustError", "Error")) or "Error:" in line:
            return line[-300:]
        if line == "Error" and i + 1 < len(lines):
            return lines[i + 1][-300:]
    return "no error message in the log"


def raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
