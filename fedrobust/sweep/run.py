"""``fedrobust sweep RUN_DIR``: every (target, attack, eps) cell on the test split, into sweep.csv.

Each cell is scored twice: on the crafted float images, and on the same images rounded to 8 bits as an
attacker who must send a PNG delivers them (``<metric>_8bit``). Finished cells are appended to
``.sweep.partial.csv`` as they complete, so a stopped sweep resumes without recomputing them; the complete
table is then moved to ``sweep.csv`` in one step (``fedrobust.sweep.results``). The report is written from
it by the caller (``fedrobust.pipeline``).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedrobust.attacks.gradient import input_gradient
from fedrobust.config import ExperimentConfig
from fedrobust.config.schema import DEFAULT_ATTACKS
from fedrobust.edge.images import as_8bit
from fedrobust.errors import ConfigError
from fedrobust.progress import progress_bar
from fedrobust.rundir import atomic_write_bytes
from fedrobust.seeding import seed_everything
from fedrobust.sweep.cells import MARGIN_TWINS, Cell, applies, craft, crafted_on, redundant
from fedrobust.sweep.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from fedrobust.sweep.results import (
    CORRUPTIONS_CSV,
    PARTIAL,
    columns,
    delivered_column,
    read_partial,
    settings_blob,
    sweep_images,
    write_sweep,
)
from fedrobust.sweep.targets import Target, load_targets, teacher_of
from fedrobust.tasks.base import Split, Task
from fedrobust.tasks.registry import task_for


def plan(cfg: ExperimentConfig, target_names: list[str], skip: dict[str, str] | None = None) -> list[Cell]:
    """Clean cells first, then attacks by eps (cheap cells before expensive ones), without the ``skip`` ones."""
    cells = [Cell(t, "clean", 0.0) for t in target_names]
    for attack in (a for a in cfg.sweep.attacks if a not in (skip or {})):
        for eps in sorted(cfg.sweep.eps):
            cells += [Cell(t, attack, eps) for t in target_names if applies(attack, t)]
    return cells


def sweep(cfg: ExperimentConfig, run_dir: Path, log: Callable[[str], Any] = print) -> Path:
    """Run (or resume) the sweep of ``run_dir``; returns the path of sweep.csv."""
    seed_everything(cfg.run.seed, cfg.run.threads)
    task = task_for(cfg)
    header = columns(task.name)
    targets = load_targets(cfg, run_dir)
    if not targets:
        raise ConfigError(f"sweep.targets: none of {', '.join(cfg.sweep.targets)} exists in {run_dir}; "
                          f"distill/export first or include 'global'")
    teacher = teacher_of(targets, cfg, run_dir)
    by_name = {t.name: t for t in targets}
    data = sweep_images(cfg)
    if "apgd-dlr" in cfg.sweep.attacks and (classes := targets[0].logits(data.images[:1]).shape[1]) < 3:
        raise ConfigError(f"sweep.attacks: apgd-dlr needs >= 3 classes and {cfg.data.dataset} has {max(classes, 2)}; "
                          f"use apgd-margin (autoattack picks it on binary heads by itself)")
    skip = _redundant(cfg, targets, data, task)
    if skip:
        log(f"not run: {', '.join(skip)}; on a two-class head they equal {', '.join(skip.values())} "
            f"(the margin is a monotone function of the cross-entropy; no gradient saturated on these images)")
    settings = settings_blob(cfg, len(data))
    partial = run_dir / PARTIAL
    done = read_partial(partial, settings)
    partial.with_suffix(".json").write_text(settings)
    cells = plan(cfg, list(by_name), skip)
    todo = [c for c in cells if c.key not in done]
    if done:
        log(f"resuming the sweep: {len(done)} of {len(cells)} cells already done")
    log(f"sweeping {', '.join(by_name)} on {len(data)} test images: {len(cells)} cells")
    left_out = [a for a in DEFAULT_ATTACKS if a not in cfg.sweep.attacks and a in task.spec.attacks]
    if left_out:
        log(f"left out of the default attacks: {', '.join(left_out)} (sweep.attacks; `fedrobust sweep RUN --set "
            f"sweep.attacks=...` adds them)")
    new = not partial.exists()
    with partial.open("a", newline="") as fh, progress_bar(total=len(todo), desc="sweep", unit="cell") as bar:
        writer = csv.DictWriter(fh, fieldnames=header)
        if new:
            writer.writeheader()
        cached: tuple[Any, torch.Tensor, dict[str, float]] | None = None  # consecutive cells share images
        memo: dict = {}  # APGD and Square images for autoattack; input gradients every eps of FGSM shares
        for cell in todo:
            started = time.perf_counter()
            target = by_name[cell.target]
            if cell.attack == "clean":
                x, extra = data.images, {}
            elif cached is not None and cached[0] == crafted_on(cell, cfg.sweep):
                x, extra = cached[1], cached[2]
            else:
                x, extra = craft(cell, target, teacher, data.images, data.targets, cfg.sweep, cfg.run.seed, task,
                                 memo)
                cached = (crafted_on(cell, cfg.sweep), x, extra)
            scores = task.score(target.logits(x), data)
            sent = task.score(target.logits(torch.from_numpy(as_8bit(x.numpy()))), data)[task.spec.headline]
            row = {"target": cell.target, "attack": cell.attack, "eps": cell.key[2],
                   **{col: f"{scores[metric]:.6f}" for col, metric in task.spec.columns.items()},
                   delivered_column(task.name): f"{sent:.6f}", "n": len(data),
                   "seconds": f"{time.perf_counter() - started:.3f}",
                   "mean_queries": f"{extra['mean_queries']:.1f}" if "mean_queries" in extra else ""}
            writer.writerow(row)
            fh.flush()
            done[cell.key] = {k: str(v) for k, v in row.items()}
            bar.update(1)
    path = write_sweep(run_dir, [done[c.key] for c in cells], header)
    partial.unlink(missing_ok=True)
    partial.with_suffix(".json").unlink(missing_ok=True)
    log(f"sweep table {path}")
    if cfg.sweep.corruptions:
        log(f"corruption table {corruption_sweep(targets, data, task, cfg.run.seed, run_dir)}")
    return path


def _redundant(cfg: ExperimentConfig, targets: list[Target], data: Split, task: Task) -> dict[str, str]:
    """The margin twins to skip (``cells.redundant``), after checking that no swept image has a cross-entropy
    input gradient of exactly zero on any torch model the white-box attacks use."""
    if task.name != "classification" or not any(a in MARGIN_TWINS for a in cfg.sweep.attacks):
        return {}
    classes = targets[0].logits(data.images[:1]).shape[1]
    if classes != 2:
        return {}
    sources = {id(t.source): t.source for t in targets}.values()
    x, y = data.images, data.targets
    saturated = any(bool((input_gradient(m, x[i:i + 256], y[i:i + 256], task.loss).flatten(1).abs().sum(1) == 0).any())
                    for m in sources for i in range(0, len(x), 256))
    return redundant(cfg.sweep.attacks, classes, saturated)


def corruption_sweep(targets: list[Target], data: Split, task: Task, seed: int, run_dir: Path) -> Path:
    """Every target on every corruption and severity (the same corrupted images for all), into corruptions.csv."""
    spec = task.spec
    lines = [",".join(["target", "corruption", "severity", *spec.columns, "n"])]
    jobs = [(name, s) for name in CORRUPTIONS for s in SEVERITIES]
    with progress_bar(total=len(jobs), desc="corruptions", unit="set") as bar:
        for i, (name, severity) in enumerate(jobs):
            x = corrupt(data.images, name, severity, seed + i)
            for target in targets:
                scores = task.score(target.logits(x), data)
                lines.append(",".join([target.name, name, str(severity),
                                       *(f"{scores[m]:.6f}" for m in spec.columns.values()), str(len(data))]))
            bar.update(1)
    atomic_write_bytes(run_dir / CORRUPTIONS_CSV, ("\n".join(lines) + "\n").encode())
    return run_dir / CORRUPTIONS_CSV
