"""Starting and stopping Flower's processes: the environment they need, ports, logs, and a
clean stop of everything a fedrobust command started (also on Ctrl-C, SIGTERM or error)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from fedrobust.errors import FedrobustError, Terminated

MARKER = "FEDROBUST_LAUNCH_ID"
PREFIX = "[fedrobust] "
PROJECT = Path(__file__).resolve().parents[1]
# Flower's connections and installed apps: the project's own folder unless FLWR_HOME says otherwise
FLWR_HOME = Path(os.environ.get("FLWR_HOME") or PROJECT / ".flwr").resolve()
DEPLOY_CONNECTION = "fedrobust-deploy"  # the connection `fedrobust deploy superlink` writes to FLWR_HOME


def flower_env(flwr_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower processes: our venv first on PATH, no telemetry, no `uv sync`."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        # the SuperLink looks for a submitted run to launch every 1 s by default: 0.2 s cuts ~0.4 s
        # from every start, for one local RPC per poll
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float, log_file: Path,
                  shown: Path | None = None) -> None:
    """Wait until ``proc`` listens on ``port``; ``shown``: where the user will find its log."""
    shown = shown or log_file
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text()[-600:] if log_file.exists() else ""
            raise FedrobustError(f"the SuperLink exited at start (code {proc.returncode}); see {shown}: "
                                 + " ".join(tail.split())[-300:])
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise FedrobustError(f"the SuperLink did not open port {port} within {timeout:.0f}s; see {shown}")


class Watchdog:
    """Starts ``python -m launcher.watchdog`` for this process (see the module docstring)."""

    def __init__(self, marker: str, workdir: Path | None = None, remove: list[Path] | None = None) -> None:
        me = psutil.Process()
        argv = [sys.executable, "-m", "launcher.watchdog", "--pid", str(me.pid), "--created", repr(me.create_time()),
                "--marker", marker]
        if workdir is not None:
            argv += ["--workdir", str(workdir)]
        for folder in remove or []:
            argv += ["--remove", str(folder)]
        env = {k: v for k, v in os.environ.items() if k != MARKER}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        """The launcher cleaned up itself: the watchdog has nothing left to do."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)


class SimulationSuperLink:
    """A private ``flower-superlink --simulation`` on a free loopback port, and the clean stop of
    everything started under it.

    ``fedrobust simulate`` enters it before the config is checked and the data loaded, so the
    SuperLink's ~2 s boot overlaps that work. On exit (normal, error, Ctrl-C or SIGTERM) it stops
    the SuperLink's tree, every process started with this launch's marker or in its private
    working directory (the simulation runtime, Ray), and the processes handed to ``track``.
    """

    def __init__(self, ray_address: str = "") -> None:
        self.port = free_port()
        self.marker = uuid.uuid4().hex
        self.workdir: Path | None = None
        self.ray_address = ray_address
        self.env: dict[str, str] = {}
        self.watchdog: Watchdog | None = None
        self.proc: subprocess.Popen | None = None
        self.tracked: list[subprocess.Popen] = []
        self.log_dest: Path | None = None  # where the SuperLink's log is kept after the stop

    @property
    def flwr_home(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "flwr-home"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> SimulationSuperLink:
        self.workdir = Path(tempfile.mkdtemp(prefix="fedrobust-sim-")).resolve()  # cwd of all we start
        # A Flower home of its own: its connection, and the apps the SuperLink installs, belong to this
        # launch alone, so simultaneous simulations never read each other's SuperLink address. "local"
        # makes Ray start a private instance even when another cluster (or a stale
        # /tmp/ray/ray_current_cluster left by `ray start`) exists on this machine.
        self.env = flower_env(self.flwr_home, {MARKER: self.marker, "RAY_ADDRESS": self.ray_address or "local"})
        self._previous = signal.signal(signal.SIGTERM, raise_interrupt)
        try:
            self.watchdog = Watchdog(self.marker, self.workdir, remove=[self.workdir])
            with (self.workdir / "superlink.log").open("ab") as out:
                self.proc = subprocess.Popen(
                    ["flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1", "--port",
                     str(self.port), "--disable-runtime-dependency-installation"],
                    env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None and self.workdir is not None
        wait_for_port(self.port, self.proc, timeout, self.workdir / "superlink.log", self.log_dest)

    def track(self, proc: subprocess.Popen) -> subprocess.Popen:
        """Stop ``proc``'s tree with the rest on exit (e.g. ``flwr run``, started in its own session)."""
        self.tracked.append(proc)
        return proc

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._previous)
        stop_processes([self.proc, *self.tracked], self.marker, self.workdir)
        if self.workdir is not None:
            log = self.workdir / "superlink.log"
            if self.log_dest is not None and log.exists():
                with self.log_dest.open("ab") as kept:
                    kept.write(log.read_bytes())
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self.watchdog is not None:
            self.watchdog.stop()


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


def stop_processes(roots: subprocess.Popen | list[subprocess.Popen | None] | None, marker: str,
                   workdir: Path | None = None, grace: float = 15.0) -> None:
    """SIGTERM the trees of ``roots`` and every process with our marker; SIGKILL what remains.

    Repeats until no marked process is left: Ray may still be forking helpers (dashboard and
    runtime-env agents) while we stop it.
    """
    tops = [r for r in (roots if isinstance(roots, list) else [roots]) if r is not None]
    procs: dict[int, psutil.Process] = {}
    for root in tops:
        if root.poll() is None:
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
        time.sleep(0.2)
    for root in tops:
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
        if line == "Error" and i + 1 < len(lines):  # the title of Flower's error box: its reason, to the box's end
            reason = itertools.takewhile(bool, lines[i + 1:])  # the bottom border strips to ""
            return " ".join(reason)[-300:]
        if line.startswith(("FedrobustError", "Error")) or "Error:" in line:
            return line[-300:]
    return "no error message in the log"


def raise_interrupt(signum: int, frame: Any) -> None:
    raise Terminated
