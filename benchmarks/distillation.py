"""Teacher -> student distillation and int8 export, measured on the official test splits.

For each finished run (its model.pt is the teacher: normally a federated global model), distills
the student on the server's val split (`fedrobust distill`), exports fp32 + int8 ONNX
(`fedrobust export`), and tabulates teacher vs student vs int8 student. Nothing here is fitted on
test: the transfer set and the int8 calibration set are both the val split.
Goals (edge issue): student within 2 points of the teacher; int8 within 0.5 point of fp32 on
PneumoniaMNIST and within 1 image on BreastMNIST.

    python benchmarks/distillation.py RUN_DIR [RUN_DIR ...] [--set distill.epochs=60] [--from-runs]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report

from fedrobust.checkpoint import run_config
from fedrobust.distill import distill_run
from fedrobust.errors import FedrobustError
from fedrobust.export import export

ROOT = Path(__file__).resolve().parents[1]


def int8_goal(dataset: str, entry: dict) -> tuple[str, bool]:
    if dataset == "breastmnist":
        return "≤ 1 image", -entry["acc_change_images"] <= 1
    return "≤ 0.5 pt", -entry["acc_change_points"] <= 0.5


def row(run: Path) -> tuple[str, bool]:
    d = json.loads((run / "distill" / "summary.json").read_text())
    e = json.loads((run / "export" / "summary.json").read_text())
    t, s, q = d["teacher"], d["student"], e["student_int8"]
    eps = sorted(s["test_fgsm"], key=float)[-1] if s["test_fgsm"] else None
    drop_ok = d["acc_drop_points"] <= 2.0
    goal, q_ok = int8_goal(d["dataset"], q)
    fg = (f"{t['test_fgsm'][eps]['acc']:.3f} / {s['test_fgsm'][eps]['acc']:.3f}" if eps else "-")
    cells = [
        d["dataset"], f"{t['model']} ({t['parameters'] / 1e6:.1f} M)",
        f"{t['test']['acc']:.3f} / {t['test']['auc']:.3f}",
        f"{s['model']} ({s['parameters'] / 1e3:.0f} k)", f"{s['test']['acc']:.3f} / {s['test']['auc']:.3f}",
        f"{d['acc_drop_points']:+.1f}", f"{d['test_agreement']:.3f}", fg,
        f"{e['student']['test']['acc']:.3f}", f"{e['student']['parity']['max_abs_diff']:.1e}",
        f"{q['test']['acc']:.3f}", f"{q['acc_change_points']:+.2f} ({q['acc_change_images']:+d} img)",
        f"{q['agreement_with_fp32']:.3f}", f"{e['student']['bytes'] / 1024:.0f} / {q['bytes'] / 1024:.0f}",
        f"{d['transfer_set']} ({d['transfer_images']})", f"{d['seconds']:.0f}",
        ("yes" if drop_ok else "NO") + " / " + ("yes" if q_ok else "NO") + f" ({goal})",
    ]
    return "| " + " | ".join(cells) + " |", drop_ok and q_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--from-runs", action="store_true", help="only tabulate (distill/ and export/ exist)")
    parser.add_argument("--out", default=str(ROOT / "runs/results/distillation.md"))
    args = parser.parse_args()
    try:
        for run in args.runs:
            if not args.from_runs:
                cfg = run_config(run, args.overrides)
                distill_run(run, cfg=cfg, log=lambda s: print(s, file=sys.stderr))
                export(cfg, run, log=lambda s: print(s, file=sys.stderr))
        rows = [row(run) for run in args.runs]
    except (FedrobustError, FileNotFoundError) as exc:
        print(f"distillation: error: {exc}", file=sys.stderr)
        return 2
    header = ("| dataset | teacher | teacher ACC / AUC | student | student ACC / AUC | drop (pts) | agreement "
              "| FGSM@max eps teacher / student | ONNX fp32 ACC | max abs logit diff | ONNX int8 ACC "
              "| int8 vs fp32 | int8 agrees | KB fp32 / int8 | transfer set | distill s | goals met |")
    lines = [
        "# Distillation and int8 export (edge issue)", "",
        f"Command: `{command()}`  ", f"Machine: {describe()}", "",
        "Teacher = the run's final model (model.pt); student distilled on the server's val split, int8 "
        "calibrated on val; every accuracy on the official test split (medmnist getACC/getAUC); ONNX "
        "numbers through onnxruntime. drop = teacher ACC − student ACC in points. Settings: each run's "
        "distill/config.toml.", "",
        header, "|" + " --- |" * (header.count("|") - 1),
        *[r for r, _ in rows], "",
        "Run directories:", "", *[f"- `{run}`" for run in args.runs], "",
    ]
    print(write_report(args.out, lines))
    return 0 if all(ok for _, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
