"""`fedrobust simulate`: run the Flower apps under the simulation runtime (Ray) and clean up.

Starts a private SuperLink (``flower-superlink --simulation``) on a free loopback port with
``FLWR_HOME`` inside the project, submits this project with ``flwr run`` (run config = the
flattened fedrobust config), streams the rounds, and on exit, error or Ctrl-C stops every
process it started: the SuperLink's whole process tree plus anything (e.g. Ray) that carries
this launch's marker in its environment.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from fedrobust.config import ExperimentConfig, to_flat
from fedrobust.data.loading import load_from_config
from fedrobust.errors import FedrobustError
from fedrobust.federated import check_federation
from fedrobust.rundir import RunDir

PROJECT = Path(__file__).resolve().parents[1]
CONNECTION = "fedrobust-sim"
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


def check_app_config(flat: dict[str, Any]) -> None:
    """Flower rejects run-config keys the app does not declare, with only "Invalid run configuration":
    name the missing keys instead."""
    declared = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    tables = declared.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    keys = {f"{section}.{leaf}" for section, values in tables.items() if isinstance(values, dict) for leaf in values}
    missing = sorted(set(flat) - keys)
    if missing:
        raise FedrobustError(f"pyproject.toml's [tool.flwr.app.config] lacks {len(missing)} config keys "
                             f"(e.g. {missing[0]}); run `make flwr-config` to regenerate it")


def _federation_config(cfg: ExperimentConfig) -> str:
    sim = cfg.simulation
    parts = [f"num-supernodes={cfg.partition.num_clients}", f"client-resources-num-cpus={sim.cpus_per_client}"]
    if sim.num_cpus and not sim.ray_address:  # Ray refuses num_cpus when joining a cluster
        parts.append(f"init-args-num-cpus={sim.num_cpus}")
    return " ".join(parts)


def prepare_run(cfg: ExperimentConfig, resume: bool) -> RunDir:
    """Check the federation can work, then create (or reopen) the run directory."""
    check_federation(cfg, load_from_config(cfg.data, "train").labels.numpy())
    load_from_config(cfg.data, "test")  # the server evaluates on it: fail now, not inside Flower
    if resume:
        return RunDir.open(Path(cfg.run.dir), cfg)
    run = RunDir.create(cfg)
    cfg.run.dir = str(run.path.resolve())
    run.write_config(cfg)
    return run


def simulate(cfg: ExperimentConfig, resume: bool = False, echo: Callable[[str], Any] = print) -> Path:
    """Run the federation in Flower's simulation runtime; return the complete run directory."""
    if cfg.data.root:
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    elif os.environ.get("FEDROBUST_DATA_ROOT"):
        cfg.data.root = str(Path(os.environ["FEDROBUST_DATA_ROOT"]).expanduser().resolve())
    # everything we start runs in a private cwd: relative paths would point there
    cfg.run.out_dir = str(Path(cfg.run.out_dir).expanduser().resolve())
    if cfg.run.dir:
        cfg.run.dir = str(Path(cfg.run.dir).expanduser().resolve())
    if not (PROJECT / "pyproject.toml").is_file():
        raise FedrobustError(f"no pyproject.toml next to {PROJECT / 'server'}: `fedrobust simulate` submits the "
                             f"project as a Flower app, so install it from a checkout with `pip install -e .`")
    check_app_config(to_flat(cfg))
    run = prepare_run(cfg, resume)
    if (run.path / RunDir.SUMMARY).exists():
        raise FedrobustError(f"{run.path} is already complete (summary.json exists); nothing to resume")
    flwr_home = PROJECT / ".flwr"
    port = free_port()
    write_connection(flwr_home, CONNECTION, {"address": f"127.0.0.1:{port}", "insecure": True})
    marker = uuid.uuid4().hex
    workdir = Path(tempfile.mkdtemp(prefix="fedrobust-sim-")).resolve()  # cwd of everything we start
    extra = {MARKER: marker}
    # "local" makes Ray start a private instance even when another cluster (or a stale
    # /tmp/ray/ray_current_cluster left by `ray start`) exists on this machine.
    extra["RAY_ADDRESS"] = cfg.simulation.ray_address or "local"
    env = flower_env(flwr_home, extra)
    run_config = run.path / "flower-run-config.toml"
    flat = to_flat(cfg)
    run_config.write_text(tomli_w.dumps(flat))
    link_log = run.path / "superlink.log"
    flower_log = run.path / "flower.log"
    superlink: subprocess.Popen | None = None
    runner: subprocess.Popen | None = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with link_log.open("ab") as out:
            superlink = subprocess.Popen(
                ["flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(port),
                 "--disable-runtime-dependency-installation"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir)
        wait_for_port(port, superlink, cfg.simulation.startup_timeout, link_log)
        ray = f"Ray at {cfg.simulation.ray_address}" if cfg.simulation.ray_address else "a local Ray"
        echo(f"SuperLink pid {superlink.pid} on 127.0.0.1:{port}; {cfg.partition.num_clients} virtual clients "
             f"({cfg.simulation.cpus_per_client} CPU each) on {ray}")
        cmd = ["flwr", "run", str(PROJECT), CONNECTION, "--run-config", str(run_config),
               "--federation-config", _federation_config(cfg), "--stream"]
        with flower_log.open("a") as log:
            runner = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      cwd=workdir, start_new_session=True)
            assert runner.stdout is not None
            for line in runner.stdout:
                log.write(line)
                log.flush()
                if PREFIX in line:
                    echo(line.split(PREFIX, 1)[1].rstrip())
                elif cfg.simulation.verbose:
                    echo(line.rstrip())
            runner.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if runner is not None and runner.poll() is None:
            runner.terminate()
        stop_processes(superlink, marker, workdir)
        if runner is not None:
            stop_processes(runner, marker, workdir, grace=5)
        shutil.rmtree(workdir, ignore_errors=True)
    if not (run.path / RunDir.SUMMARY).exists():
        raise FedrobustError(f"the federated run did not complete ({last_error(flower_log)}); see {flower_log}; "
                             f"resume with `fedrobust simulate --resume {run.path}`")
    return run.path


def last_error(log_file: Path) -> str:
    """The most telling line of a Flower log: the last error message or exception."""
    if not log_file.exists():
        return "no log"
    lines = [" ".join(line.strip(" │╭╮╰╯─").split()) for line in log_file.read_text(errors="replace").splitlines()]
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line.startswith(("fedrobust.errors.", "FedrobustError", "Error")) or "Error:" in line:
            return line[-300:]
        if line == "Error" and i + 1 < len(lines):
            return lines[i + 1][-300:]
    return "no error message in the log"


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
