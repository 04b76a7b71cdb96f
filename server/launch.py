"""`fedrobust simulate`: run the Flower apps under the simulation runtime (Ray) and clean up.

Starts a private SuperLink (``flower-superlink --simulation``) on a free loopback port with
``FLWR_HOME`` inside the project, submits this project with ``flwr run`` (run config = the
flattened fedrobust config), streams the rounds, and on exit, error or Ctrl-C stops every
process it started: the SuperLink's whole process tree plus anything (e.g. Ray) that carries
this launch's marker in its environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from fedrobust.config import ExperimentConfig, to_flat
from fedrobust.data.loading import load_from_config
from fedrobust.errors import FedrobustError
from fedrobust.federated import check_federation
from fedrobust.rundir import RunDir
from server.processes import (
    MARKER,
    PREFIX,
    flower_env,
    free_port,
    last_error,
    raise_interrupt,
    stop_processes,
    wait_for_port,
    write_connection,
)

PROJECT = Path(__file__).resolve().parents[1]
# Flower's connections and installed apps: the project's own folder unless FLWR_HOME says otherwise
FLWR_HOME = Path(os.environ.get("FLWR_HOME") or PROJECT / ".flwr").resolve()
CONNECTION = "fedrobust-sim"


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


def start_run(cfg: ExperimentConfig, resume: bool, command: str) -> RunDir:
    """Absolute paths (Flower runs the apps in other working directories), checks, and the run
    directory with the run config Flower will pass to the apps."""
    if cfg.data.root:
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    elif os.environ.get("FEDROBUST_DATA_ROOT"):
        cfg.data.root = str(Path(os.environ["FEDROBUST_DATA_ROOT"]).expanduser().resolve())
    cfg.run.out_dir = str(Path(cfg.run.out_dir).expanduser().resolve())
    if cfg.run.dir:
        cfg.run.dir = str(Path(cfg.run.dir).expanduser().resolve())
    if not (PROJECT / "pyproject.toml").is_file():
        raise FedrobustError(f"no pyproject.toml next to {PROJECT / 'server'}: `fedrobust {command}` submits the "
                             f"project as a Flower app, so install it from a checkout with `pip install -e .`")
    check_app_config(to_flat(cfg))
    run = prepare_run(cfg, resume)
    if (run.path / RunDir.SUMMARY).exists():
        raise FedrobustError(f"{run.path} is already complete (summary.json exists); nothing to resume")
    (run.path / "flower-run-config.toml").write_text(tomli_w.dumps(to_flat(cfg)))
    return run


def submit_run(run: RunDir, connection: str, env: dict[str, str], cwd: Path, echo: Callable[[str], Any],
               verbose: bool, extra_args: list[str] | None = None) -> subprocess.Popen:
    """``flwr run`` this project on ``connection``; stream fedrobust's lines to ``echo`` and
    everything to ``flower.log``. Returns the finished ``flwr run`` process."""
    cmd = ["flwr", "run", str(PROJECT), connection, "--run-config", str(run.path / "flower-run-config.toml"),
           *(extra_args or []), "--stream"]
    with (run.path / "flower.log").open("a") as log:
        runner = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  cwd=cwd, start_new_session=True)
        try:
            assert runner.stdout is not None
            for line in runner.stdout:
                log.write(line)
                log.flush()
                if PREFIX in line:
                    echo(line.split(PREFIX, 1)[1].rstrip())
                elif verbose:
                    echo(line.rstrip())
            runner.wait()
        finally:
            if runner.poll() is None:
                runner.terminate()
    return runner


def check_complete(run: RunDir, resume_hint: str) -> Path:
    if not (run.path / RunDir.SUMMARY).exists():
        flower_log = run.path / "flower.log"
        raise FedrobustError(f"the federated run did not complete ({last_error(flower_log)}); see {flower_log}; "
                             f"{resume_hint} {run.path}`")
    return run.path


def simulate(cfg: ExperimentConfig, resume: bool = False, echo: Callable[[str], Any] = print) -> Path:
    """Run the federation in Flower's simulation runtime; return the complete run directory."""
    run = start_run(cfg, resume, "simulate")
    port = free_port()
    write_connection(FLWR_HOME, CONNECTION, {"address": f"127.0.0.1:{port}", "insecure": True})
    marker = uuid.uuid4().hex
    workdir = Path(tempfile.mkdtemp(prefix="fedrobust-sim-")).resolve()  # cwd of everything we start
    extra = {MARKER: marker}
    # "local" makes Ray start a private instance even when another cluster (or a stale
    # /tmp/ray/ray_current_cluster left by `ray start`) exists on this machine.
    extra["RAY_ADDRESS"] = cfg.simulation.ray_address or "local"
    env = flower_env(FLWR_HOME, extra)
    link_log = run.path / "superlink.log"
    superlink: subprocess.Popen | None = None
    runner: subprocess.Popen | None = None
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
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
        runner = submit_run(run, CONNECTION, env, workdir, echo, cfg.simulation.verbose,
                            ["--federation-config", _federation_config(cfg)])
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_processes(superlink, marker, workdir)
        if runner is not None:
            stop_processes(runner, marker, workdir, grace=5)
        shutil.rmtree(workdir, ignore_errors=True)
    return check_complete(run, "resume with `fedrobust simulate --resume")
