"""`fedrobust simulate`: run the Flower apps under the simulation runtime (Ray) and clean up.

A private SuperLink (``launcher.processes.SimulationSuperLink``, with a Flower home of its own)
boots while the data are checked; then this project (a staged copy, see
``launcher.app_bundle``) is submitted with ``flwr run`` (run config = the flattened fedrobust
config) and the rounds are streamed. On exit, error or Ctrl-C every process it started is
stopped: the SuperLink's whole tree plus anything (e.g. Ray) that carries this launch's marker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from fedrobust.config import ExperimentConfig, to_flat
from fedrobust.device import resolve_device
from fedrobust.errors import ConfigError, FedrobustError
from fedrobust.federated import check_federation
from fedrobust.pipeline import missing_outputs
from fedrobust.rundir import RunDir
from fedrobust.tasks.registry import task_for
from fedrobust.tasks.specs import SPECS
from launcher.app_bundle import stage_app
from launcher.processes import PREFIX, PROJECT, SimulationSuperLink, last_error, stop_processes, write_connection

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
    if sim.gpus_per_client:  # Ray then shows each virtual client its share of a GPU (CUDA_VISIBLE_DEVICES)
        parts.append(f"client-resources-num-gpus={sim.gpus_per_client:g}")
    elif cfg.run.device.startswith("cuda"):
        raise ConfigError("simulation.gpus_per_client: run.device is cuda, but Ray hides the GPU from virtual clients "
                          "without a GPU share; set e.g. 0.5 (two clients per GPU)")
    if sim.num_cpus and not sim.ray_address:  # Ray refuses num_cpus when joining a cluster
        parts.append(f"init-args-num-cpus={sim.num_cpus}")
    return " ".join(parts)


def prepare_run(cfg: ExperimentConfig, resume: bool) -> RunDir:
    """Check the federation can work, then create (or reopen) the run directory."""
    resolve_device(cfg.run.device)  # `cuda` without CUDA: one line now, not a traceback inside Flower
    task = task_for(cfg)
    check_federation(cfg, task.load(cfg.data, "train"))
    task.load(cfg.data, "test")  # the server evaluates on it: fail now, not inside Flower
    if resume:
        return RunDir.open(Path(cfg.run.dir), cfg)
    run = RunDir.create(cfg)
    cfg.run.dir = str(run.path.resolve())
    run.write_config(cfg)
    return run


def absolute_data_root(cfg: ExperimentConfig) -> str:
    """``data.root``, else the task's root variable ($FEDROBUST_DATA_ROOT / $FEDROBUST_SEG_ROOT), as an absolute
    path: the apps run in other processes and folders, so the launcher's root is passed on explicitly."""
    root = cfg.data.root or os.environ.get(SPECS[cfg.data.task].root_env, "")
    return str(Path(root).expanduser().resolve()) if root else ""


def start_run(cfg: ExperimentConfig, resume: bool, command: str, marker: str) -> RunDir:
    """Absolute paths (Flower runs the apps in other working directories), checks, and the run
    directory with the run config Flower will pass to the apps, held by this launcher (``marker``:
    its launch marker, so that a later launch can stop what this one leaves if it is killed) until
    the caller releases it."""
    cfg.data.root = absolute_data_root(cfg)
    cfg.run.out_dir = str(Path(cfg.run.out_dir).expanduser().resolve())
    if cfg.run.dir:
        cfg.run.dir = str(Path(cfg.run.dir).expanduser().resolve())
    if not (PROJECT / "pyproject.toml").is_file():
        raise FedrobustError(f"no pyproject.toml next to {PROJECT / 'server'}: `fedrobust {command}` submits the "
                             f"project as a Flower app, so install it from a checkout with `pip install -e .`")
    check_app_config(to_flat(cfg))
    run = prepare_run(cfg, resume)
    left = run.hold(f"fedrobust {command}", marker)
    if left.get("marker"):  # a launch of this run that was killed: what it left running goes first
        stop_processes(None, left["marker"])
    if (run.path / RunDir.SUMMARY).exists():
        run.release()
        raise FedrobustError(f"{run.path} is already complete (summary.json exists); nothing to resume")
    (run.path / "flower-run-config.toml").write_text(tomli_w.dumps(to_flat(cfg)))
    return run


def submit_run(run: RunDir, connection: str, env: dict[str, str], cwd: Path, echo: Callable[[str], Any],
               verbose: bool, staging_parent: Path, extra_args: list[str] | None = None,
               track: Callable[[subprocess.Popen], Any] | None = None) -> subprocess.Popen:
    """``flwr run`` this project (its staged copy under ``staging_parent``, see ``app_bundle``) on
    ``connection``; stream fedrobust's lines to ``echo`` and everything to ``flower.log``. Returns the
    finished process. ``staging_parent`` is a folder the launcher's watchdog removes if it dies."""
    staging = Path(tempfile.mkdtemp(prefix="app-", dir=staging_parent))
    cmd = ["flwr", "run", str(stage_app(PROJECT, staging)), connection,
           "--run-config", str(run.path / "flower-run-config.toml"), *(extra_args or []), "--stream"]
    with (run.path / "flower.log").open("a") as log:
        runner = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  cwd=cwd, start_new_session=True)
        if track is not None:
            track(runner)
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
            shutil.rmtree(staging, ignore_errors=True)
    return runner


def check_complete(run: RunDir, resume_hint: str, cfg: ExperimentConfig) -> Path:
    """The run directory, or a one-line error naming what the ServerApp did not write and how to go on."""
    flower_log = run.path / "flower.log"
    if not (run.path / RunDir.SUMMARY).exists():
        raise FedrobustError(f"the federated run did not complete ({last_error(flower_log)}); see {flower_log}; "
                             f"{resume_hint} {run.path}`")
    missing = missing_outputs(cfg, run.path)
    if missing:
        step = "distill" if missing[0].startswith("distill") else "export" if missing[0].startswith("export") \
            else "sweep"
        raise FedrobustError(f"the federation finished but {missing[0]} was not written ({last_error(flower_log)}); "
                             f"see {flower_log}; go on with `fedrobust {step} {run.path}`")
    return run.path


def simulate(cfg: ExperimentConfig, resume: bool = False, echo: Callable[[str], Any] = print,
             link: SimulationSuperLink | None = None) -> Path:
    """Run the federation in Flower's simulation runtime; return the complete run directory.

    ``link``: a SuperLink already booting (``fedrobust simulate`` starts it before checking the
    config); without one, a private SuperLink is started here.
    """
    if link is None:
        with SimulationSuperLink(cfg.simulation.ray_address) as own:
            return simulate(cfg, resume, echo, own)
    run = start_run(cfg, resume, "simulate", link.marker)
    try:
        return _simulate(cfg, run, echo, link)
    finally:
        run.release()


def _simulate(cfg: ExperimentConfig, run: RunDir, echo: Callable[[str], Any], link: SimulationSuperLink) -> Path:
    link.log_dest = run.path / "superlink.log"
    link.wait_ready(cfg.simulation.startup_timeout)
    write_connection(link.flwr_home, CONNECTION, {"address": link.address, "insecure": True})
    ray = f"Ray at {cfg.simulation.ray_address}" if cfg.simulation.ray_address else "a local Ray"
    assert link.proc is not None and link.workdir is not None
    echo(f"SuperLink pid {link.proc.pid} on {link.address}; {cfg.partition.num_clients} virtual clients "
         f"({cfg.simulation.cpus_per_client} CPU each) on {ray}")
    submit_run(run, CONNECTION, link.env, link.workdir, echo, cfg.simulation.verbose, link.workdir,
               ["--federation-config", _federation_config(cfg)], track=link.track)
    return check_complete(run, "resume with `fedrobust simulate --resume", cfg)
