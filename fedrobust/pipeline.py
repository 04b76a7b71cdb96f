"""What follows training in one run: distill the final model, export it for the edge, sweep attacks.

Each step is switched on in the config (``distill.enabled``, ``export.enabled``, ``sweep.enabled``)
and writes into the same run directory; ``fedrobust distill`` / ``export`` / ``sweep`` run them
later by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedrobust.config import ExperimentConfig


def after_training(cfg: ExperimentConfig, run_dir: Path, log: Callable[[str], Any] = print) -> None:
    if cfg.distill.enabled:
        from fedrobust.distill import distill_run

        distill_run(run_dir, cfg=cfg, log=log)
    if cfg.export.enabled:
        from fedrobust.export import export

        export(cfg, Path(run_dir), log)
    if cfg.sweep.enabled:
        sweep_and_report(cfg, Path(run_dir), log)


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
