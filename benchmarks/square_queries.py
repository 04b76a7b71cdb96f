"""Is the black-box attacker of the robustness study weak because the model is robust, or because it
had only 100 queries? Square (score-based, queries only the onnxruntime session) against the exported
students at several query budgets, next to white-box PGD crafted on the torch student and scored by
the same runtime. Reads finished runs (distilled + exported); writes nothing into them.

    python benchmarks/square_queries.py RUN_DIR [RUN_DIR ...] [--queries 100 300 1000] [--eps 0.005 0.0314]
        [--set sweep.max_images=200]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report

from fedrobust.checkpoint import run_config
from fedrobust.errors import FedrobustError
from fedrobust.sweep.cells import Cell, craft, crafted_on
from fedrobust.sweep.run import sweep_images
from fedrobust.sweep.targets import Target, load_targets
from fedrobust.tasks.registry import task_of

TASK = task_of("classification")

ROOT = Path(__file__).resolve().parents[1]


def margins(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``score[y] - best other score`` per row (negative = misclassified)."""
    scores = np.asarray(scores, dtype=np.float64)
    true = np.take_along_axis(scores, y[:, None], 1)[:, 0]
    other = np.where(np.eye(scores.shape[1], dtype=bool)[y], -np.inf, scores).max(1)
    return true - other


def flat_share(target: Target, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int, p_init: float = 0.05) -> float:
    """Share of images whose margin does not move at all under one Square-sized proposal (a window of
    p_init of the pixels set to +-eps). Square keeps a proposal only if the margin strictly falls,
    so on flat (e.g. quantized) scores it learns nothing from such a query."""
    rng = np.random.default_rng(seed)
    xs, ys = x.numpy(), y.numpy()
    n, _, h, w = xs.shape
    side = max(1, round(float(np.sqrt(p_init * h * w))))
    moved = xs.copy()
    for i in range(n):
        r, c = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        window = moved[i, :, r:r + side, c:c + side]
        moved[i, :, r:r + side, c:c + side] = np.clip(window + rng.choice([-1.0, 1.0]) * eps, 0, 1)
    before = margins(target.logits(x), ys)
    after = margins(target.logits(torch.from_numpy(moved)), ys)
    return float(np.mean(before == after))


def study(run: Path, queries: list[int], eps_grid: list[float], targets: list[str], overrides: list[str],
          log) -> list[dict]:
    cfg = run_config(run, [f"sweep.targets={targets}", *overrides])
    found = load_targets(cfg, run)
    if not found:
        raise FedrobustError(f"{run}: no exported student ({', '.join(targets)}); run `fedrobust export {run}` first")
    data = sweep_images(cfg)
    chance = TASK.chance(data)
    rows = []
    pgd_images: dict[tuple[str, str, str], torch.Tensor] = {}  # fp32 and int8 share them, as in the sweep
    for target in found:
        clean = TASK.score(target.logits(data.images), data)["acc"]
        for eps in eps_grid:
            cell = Cell(target.name, "pgd", eps)
            key = crafted_on(cell, cfg.sweep)
            if key not in pgd_images:
                pgd_images[key] = craft(cell, target, target.source, data.images, data.labels, cfg.sweep,
                                        cfg.run.seed, TASK)[0]
            row = {"run": run.name, "target": target.name, "eps": eps, "n": len(data), "chance": chance,
                   "clean": clean, "tolerance": cfg.sweep.tolerance,
                   "pgd": TASK.score(target.logits(pgd_images[key]), data)["acc"],
                   "flat": flat_share(target, data.images, data.labels, eps, cfg.run.seed)}
            for q in queries:
                started = time.perf_counter()
                w = replace(cfg.sweep, square_queries=q)
                x, extra = craft(Cell(target.name, "square", eps), target, target.source, data.images, data.labels,
                                 w, cfg.run.seed, TASK)
                row[f"square{q}"] = TASK.score(target.logits(x), data)["acc"]
                row[f"queries{q}"] = extra["mean_queries"]
                row[f"seconds{q}"] = time.perf_counter() - started
            log(f"{run.name} {target.name} eps {eps:g}: clean {clean:.3f} pgd {row['pgd']:.3f} "
                + " ".join(f"sq{q} {row[f'square{q}']:.3f}" for q in queries))
            rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--queries", nargs="+", type=int, default=[100, 300, 1000])
    p.add_argument("--eps", nargs="+", type=float, default=[0.005, 8 / 255])
    p.add_argument("--targets", nargs="+", default=["onnx_int8"], help="onnx_fp32 and/or onnx_int8")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override the run's config, e.g. --set sweep.max_images=200 (a seeded sample of test)")
    p.add_argument("--out", default=str(ROOT / "runs/results/square_queries.md"))
    args = p.parse_args()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    rows: list[dict] = []
    try:
        for run in args.runs:
            rows += study(run, sorted(args.queries), args.eps, args.targets, args.overrides, log)
    except (FedrobustError, FileNotFoundError) as exc:
        print(f"square_queries: error: {exc}", file=sys.stderr)
        return 2
    qs = sorted(args.queries)
    head = ["run", "evaluated model", "n", "ε", "constant guess", "clean", "PGD (white-box)",
            *[f"Square {q} q" for q in qs], "mean queries used", "flat proposals", "Square ≥ PGD − tolerance"]
    lines = ["# Square (black-box) at several query budgets vs white-box PGD", "", f"Command: `{command()}`  ",
             f"Machine: {describe()}", "",
             "Accuracy on the official test split (n images; fewer than the split = a seeded sample, "
             "`sweep.max_images`). PGD: the sweep's PGD (steps and restarts from each run's config), crafted on "
             "the torch student and scored by the ONNX runtime named in the row. Square: the "
             "sweep's Square attack (L∞, margin loss, p_init 0.05, schedule rescaled to the budget), querying only "
             "that onnxruntime session; 'mean queries used' is per image at the largest budget (an image stops "
             "costing queries once it is misclassified). 'Flat proposals': share of images whose margin does not "
             "change at all under one random Square-sized proposal at that ε (Square keeps only strict "
             "improvements, so such queries teach it nothing). The last column is the study's sanity check: a "
             "black-box attacker should not beat the white-box one by more than the sweep's tolerance "
             "(`sweep.tolerance` of each run).", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        squares = [r[f"square{q}"] for q in qs]
        ok = "yes" if min(squares) >= r["pgd"] - r["tolerance"] else "**no**"
        lines.append(f"| {r['run']} | {r['target']} | {r['n']} | {r['eps']:.4g} | {r['chance']:.3f} | "
                     f"{r['clean']:.3f} | {r['pgd']:.3f} | " + " | ".join(f"{s:.3f}" for s in squares)
                     + f" | {r[f'queries{qs[-1]}']:.0f} | {r['flat']:.0%} | {ok} |")
    seconds = {q: sum(r[f"seconds{q}"] for r in rows) for q in qs}
    lines += ["", "Square time, all rows: " + ", ".join(f"{q} queries {s:.0f} s" for q, s in seconds.items()), ""]
    print(write_report(args.out, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
