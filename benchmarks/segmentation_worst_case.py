"""The segmentation study's models under the strongest attacks the mask task has (robust-evaluation issue).

No library attacks masks, so the strongest are fedrobust's own: PGD with restarts (per image the restart with
the lowest IoU), APGD's step-size schedule on the Dice + BCE loss (`apgd-loss`), and their per-image worst case
(`autoattack`: FGSM, PGD, apgd-loss). Each run's checkpoint is copied to ``--work`` and swept there, so the
study's own sweep.csv (FGSM and inverse FGSM) is left as it was.

    python benchmarks/segmentation_worst_case.py RUN_DIR [RUN_DIR ...] [--eps 0.0012 0.0118 0.00784]
        [--set sweep.pgd_restarts=3 --set sweep.apgd_steps=100]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report
from robustness_study import at

from fedrobust.checkpoint import run_config
from fedrobust.errors import FedrobustError
from fedrobust.sweep import SWEEP_CSV, sweep
from fedrobust.sweep.checks import score_table
from fedrobust.sweep.results import read_sweep

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ["fgsm", "pgd", "apgd-loss", "autoattack"]
KEEP = ("config.toml", "model.pt", "summary.json", "metrics.jsonl")  # what a sweep of the global model reads


def worst_case_sweep(run: Path, work: Path, eps: list[float], overrides: list[str], log) -> Path:
    """The run's global model swept with restarts and APGD in a copy of the run (resumes like any sweep)."""
    copy = work / run.name
    copy.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        if (run / name).is_file() and not (copy / name).is_file():
            shutil.copy2(run / name, copy / name)
    cfg = run_config(copy, [f"sweep.eps={eps}", f"sweep.attacks={ATTACKS}", "sweep.targets=['global']",
                            "sweep.corruptions=false", "sweep.pgd_restarts=3", *overrides])
    sweep(cfg, copy, log)
    return copy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.0012, 0.0118, 2 / 255])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--work", type=Path, default=ROOT / "runs/seg-worst-case")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/results/segmentation_worst_case.md")
    args = parser.parse_args()
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    lines = ["# Segmentation: the study's models under the strongest mask attacks", "",
             f"Command: `{command()}`  ", f"Machine: {describe()}", "",
             "Polyp IoU per test image, averaged over the swept test images, of each run's global model. PGD ×3: "
             "three restarts, per image the lowest IoU; APGD: apgd-loss, APGD's schedule on Dice + BCE; worst: per "
             "image the lowest IoU of FGSM, PGD ×3 and apgd-loss; in brackets the worst case delivered as 8-bit "
             "images.", "",
             "| run (images) | clean | " + " | ".join(f"ε {e:.4g} ({e * 255:.2g}/255): FGSM / PGD ×3 / APGD / worst"
                                            for e in args.eps) + " | worst-case s / 100 images |",
             "|" + " --- |" * (3 + len(args.eps))]
    try:
        for run in args.runs:
            copy = worst_case_sweep(run, args.work, args.eps, args.overrides, log)
            rows = read_sweep(copy / SWEEP_CSV)
            t, sent = score_table(rows, "iou"), score_table(rows, "iou_8bit")
            cells = []
            for e in args.eps:
                parts = [at(t[("global", "fgsm")], e), at(t[("global", "pgd")], e),
                         at(t[("global", "apgd-loss")], e), at(t[("global", "autoattack")], e)]
                cells.append(" / ".join(f"{v:.3f}" for v in parts)
                             + f" ({at(sent[('global', 'autoattack')], e):.3f})")
            secs = [float(r["seconds"]) for r in rows if r["attack"] in ATTACKS]  # the worst case and its parts
            per100 = 100 * sum(secs) / len(args.eps) / float(rows[0]["n"])
            n = int(float(rows[0]["n"]))
            lines.append(f"| `{run.name}` ({n}) | {t[('global', 'clean')][0.0]:.3f} | " + " | ".join(cells)
                         + f" | {per100:.0f} |")
    except (FedrobustError, FileNotFoundError, KeyError) as exc:
        print(f"segmentation_worst_case: error: {exc}", file=sys.stderr)
        return 2
    lines += ["", "Seconds: the worst case with its parts (FGSM, PGD ×3, apgd-loss cells), per ε, per 100 images."]
    print(write_report(args.out, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
