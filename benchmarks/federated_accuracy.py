"""Federated accuracy and robustness (federation issue), through the real Flower + Ray runtime.

For each dataset, trains the federation (configs/fed_<dataset>_resnet18.toml: 10 clients,
Dirichlet 0.5) once per local augmentation mode and reports clean test ACC/AUC and FGSM test
accuracy at eps 0.001..0.005 (white-box, crafted against the final global model) in one table.
Writes runs/results/federated_accuracy.md. Finished runs can be re-read with --from-runs.

    python benchmarks/federated_accuracy.py [--datasets breast pneumonia] [--modes none fgsm invfgsm both]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report
from _simrun import simulate

ROOT = Path(__file__).resolve().parents[1]
EPS = ("0.001", "0.002", "0.003", "0.004", "0.005")
TARGET_CLEAN = {"breastmnist": 0.83, "pneumoniamnist": 0.85}
TARGET_FGSM005 = {"breastmnist": 0.80, "pneumoniamnist": 0.85}


def _row(summary: dict, base: dict | None) -> str:
    ds, mode = summary["dataset"], summary["augment"]
    acc, auc = summary["test"]["acc"], summary["test"]["auc"]
    fg = [summary["test_fgsm"][e]["acc"] for e in EPS]
    drop = (base["test"]["acc"] - acc) * 100 if base else 0.0
    if mode == "none":
        verdict = "yes" if acc >= TARGET_CLEAN[ds] else "NO"
    else:
        verdict = "yes" if fg[-1] >= TARGET_FGSM005[ds] and drop <= 2.0 else "NO"
    falls = all(b <= a + 1e-9 for a, b in zip([acc, *fg], fg, strict=False))
    chosen = f"{summary.get('selected_round', summary['rounds'])}/{summary['rounds']}"
    return (f"| {ds} | {mode} | {chosen} | {acc:.3f} | {auc:.3f} | " + " | ".join(f"{v:.3f}" for v in fg)
            + f" | {drop:+.1f} | {'yes' if falls else 'NO'} | {summary['seconds']:.0f} | {verdict} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["breast", "pneumonia"])
    p.add_argument("--modes", nargs="+", default=["none", "fgsm", "invfgsm", "both"])
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench-federated"))
    p.add_argument("--from-runs", nargs="*", help="only tabulate these finished run directories")
    p.add_argument("--out", default=str(ROOT / "runs/results/federated_accuracy.md"))
    args = p.parse_args()

    summaries: list[dict] = []
    runs: list[Path] = []
    if args.from_runs:
        runs = [Path(r) for r in args.from_runs]
        summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    else:
        for ds in args.datasets:
            for mode in args.modes:
                cfg = f"configs/fed_{ds}_resnet18.toml"
                print(f"{ds} / {mode} ...", file=sys.stderr, flush=True)
                res = simulate(cfg, [f"augment.mode={mode}", f"run.name=fed-{ds}-{mode}", *args.overrides],
                               Path(args.runs_dir), log_file=Path(args.runs_dir) / f"{ds}-{mode}.log")
                summaries.append(res["summary"])
                runs.append(res["run"])
    base = {s["dataset"]: s for s in summaries if s["augment"] == "none"}
    lines = [
        "# Federated accuracy and robustness (federation issue)",
        "",
        f"Command: `{command()}`  ",
        f"Machine: {describe()}",
        "",
        "Real Flower simulation runtime on Ray (`fedrobust simulate`), 10 clients, Dirichlet(0.5) label skew,",
        "FedAvg, resnet18 at 28 px; the global model of the round chosen on the server's val split",
        "(`federation.select`; column 'round'), evaluated on the official test split. FGSM columns:",
        "white-box FGSM crafted against the evaluated model, ε in [0, 1] pixel units. Drop = clean accuracy",
        "points lost against the same dataset's `none` run. Targets: clean ACC ≥ 0.83 (Breast) / 0.85",
        "(Pneumonia); with augmentation FGSM@0.005 ≥ 0.80 / 0.85 and drop ≤ 2 points.",
        "",
        "| dataset | local augmentation | round | ACC | AUC | " + " | ".join(f"FGSM {e}" for e in EPS)
        + " | drop (pts) | falls with ε | seconds | target met |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in EPS) + " | --- | --- | --- | --- |",
    ]
    for s in summaries:
        lines.append(_row(s, None if s["augment"] == "none" else base.get(s["dataset"])))
    lines += ["", "Run directories (config.toml in each holds every setting):", ""]
    lines += [f"- `{r.relative_to(ROOT) if r.is_relative_to(ROOT) else r}`" for r in runs]
    text = write_report(args.out, lines)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
