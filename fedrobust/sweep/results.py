"""A sweep's results on disk, owned here alone: the images it attacks, ``sweep.csv`` (long format:
one row per target, attack and eps) and the partial table an interrupted sweep resumes from."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import torch

from fedrobust.config import ExperimentConfig
from fedrobust.rundir import atomic_write_bytes
from fedrobust.tasks.base import Split
from fedrobust.tasks.registry import task_for
from fedrobust.tasks.specs import SPECS

SWEEP_CSV = "sweep.csv"
PARTIAL = ".sweep.partial.csv"
CORRUPTIONS_CSV = "corruptions.csv"  # target, corruption, severity, the task's metrics, n
_TEXT = ("target", "attack", "corruption", "n", "seconds", "mean_queries")  # every other column is a number


def delivered_column(task: str) -> str:
    """The headline score of the same images rounded to 8 bits (what an attacker can send as a PNG)."""
    return f"{SPECS[task].column}_8bit"


def columns(task: str) -> list[str]:
    """sweep.csv's header for ``task``: the cell, the task's metrics (classification: accuracy, auc), the
    headline metric of the images as delivered in 8 bits, timing."""
    return ["target", "attack", "eps", *SPECS[task].columns, delivered_column(task), "n", "seconds", "mean_queries"]


def sweep_images(cfg: ExperimentConfig) -> Split:
    """The test split, or a seeded sample of ``sweep.max_images`` of it."""
    test = task_for(cfg).load(cfg.data, "test")
    n = cfg.sweep.max_images
    if not n or n >= len(test):
        return test
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(cfg.run.seed + 101))[:n]
    return test.subset(order.sort().values.numpy())


def read_sweep(path: Path) -> list[dict[str, str | float]]:
    with Path(path).open(newline="") as fh:
        return [{k: v if k in _TEXT else float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def write_sweep(run_dir: Path, rows: list[dict[str, str]], header: list[str]) -> Path:
    """``run_dir/sweep.csv`` with ``rows`` under ``header`` in one atomic step."""
    text = ",".join(header) + "\n" + "".join(",".join(str(r.get(k, "")) for k in header) + "\n" for r in rows)
    atomic_write_bytes(run_dir / SWEEP_CSV, text.encode())
    return run_dir / SWEEP_CSV


def settings_blob(cfg: ExperimentConfig, n: int) -> str:
    return json.dumps({"sweep": asdict(cfg.sweep), "seed": cfg.run.seed, "images": n}, sort_keys=True)


def read_partial(path: Path, settings: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """Finished rows of an interrupted sweep with the same settings (else start over)."""
    meta = path.with_suffix(".json")
    if not path.exists() or not meta.exists() or meta.read_text() != settings:
        path.unlink(missing_ok=True)
        return {}
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {(r["target"], r["attack"], r["eps"]): r for r in rows}
