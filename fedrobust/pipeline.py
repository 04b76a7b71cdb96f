"""What follows training in one run: distill the final model, export it for the edge, sweep attacks.

Each step is switched on in the config (``distill.enabled``, ``export.enabled``, ``sweep.enabled``)
and writes into the same run directory; ``fedrobust distill`` / ``export`` / ``sweep`` run them
later by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedrobust.config import ExperimentConfig
from fedrobust.rundir import RunDir, atomic_write_json


def after_training(cfg: ExperimentConfig, run_dir: Path, log: Callable[[str], Any] = print) -> dict[str, float]:
    """The enabled steps after training, then one line (and summary.json's ``phase_seconds``) with the seconds
    each phase took, training included; returns them."""
    run_dir = Path(run_dir)
    path = run_dir / RunDir.SUMMARY
    phases = {"training": float(json.loads(path.read_text()).get("seconds", 0.0))} if path.exists() else {}
    for name, enabled, step in (("distill", cfg.distill.enabled, _distill), ("export", cfg.export.enabled, _export),
                                ("sweep", cfg.sweep.enabled, sweep_and_report)):
        if enabled:
            started = time.perf_counter()
            step(cfg, run_dir, log)
            phases[name] = time.perf_counter() - started
    log("seconds per phase: " + " · ".join(f"{k} {v:.0f}" for k, v in phases.items())
        + f" (total {sum(phases.values()):.0f})")
    phases = {k: round(v, 1) for k, v in phases.items()}
    if path.exists():
        atomic_write_json(path, {**json.loads(path.read_text()), "phase_seconds": phases})
    return phases


def _distill(cfg: ExperimentConfig, run_dir: Path, log: Callable[[str], Any]) -> None:
    from fedrobust.distill import distill_run

    distill_run(run_dir, cfg=cfg, log=log)


def _export(cfg: ExperimentConfig, run_dir: Path, log: Callable[[str], Any]) -> None:
    from fedrobust.export import export

    export(cfg, run_dir, log)


def missing_outputs(cfg: ExperimentConfig, run_dir: Path) -> list[str]:
    """What a finished run of ``cfg`` should hold but ``run_dir`` lacks (a step that died leaves a gap)."""
    wanted = ["summary.json"]
    if cfg.distill.enabled:
        wanted.append("distill/student.pt")
    if cfg.export.enabled:
        wanted.append("export/summary.json")
    if cfg.sweep.enabled:
        wanted += ["sweep.csv", "report.md"]
    return [w for w in wanted if not (Path(run_dir) / w).exists()]


def sweep_and_report(cfg: ExperimentConfig, run_dir: Path, log: Callable[[str], Any] = print) -> Path:
    """The attack sweep (sweep.csv), then the run's report.md, checks.json and plots/ from it."""
    from fedrobust.report.single import write_report
    from fedrobust.sweep import sweep

    sweep(cfg, run_dir, log)
    report = write_report(cfg, run_dir)
    log(f"report {report}")
    return report
