"""One markdown table of several finished runs (centralized or federated), grouped by setting, with the
mean, standard deviation and standard error over seeds: the partition seed moves single runs by several
points here, so settings are compared on their seed means, never on one run.

A run's setting is its directory name without the trailing ``-s<seed>-<YYYYMMDD>-<HHMMSS>``
(``--set run.name=<setting>-s$S``); figures come from each run's ``summary.json`` (test split, at the
round or epoch the run selected).

    python benchmarks/seed_table.py runs/cent-breast/*  [--eps 0.005]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

NAME = re.compile(r"^(?P<setting>.+)-s(?P<seed>\d+)-\d{8}-\d{6}$")


def read(run: Path, eps: str) -> dict[str, float | int | str] | None:
    summary = run / "summary.json"
    match = NAME.match(run.name)
    if not summary.is_file() or match is None:
        return None
    s = json.loads(summary.read_text())
    fgsm = s.get("test_fgsm", {}).get(eps, {}).get("acc", float("nan"))
    chosen = s.get("selected_round", s.get("selected_epoch", ""))
    return {"setting": match["setting"], "seed": int(match["seed"]), "chosen": chosen,
            "acc": s["test"]["acc"], "auc": s["test"]["auc"], "fgsm": fgsm}


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{mean:.3f}"
    sd = statistics.stdev(values)
    return f"{mean:.3f} ± {sd:.3f} (se {sd / len(values) ** 0.5:.3f})"


def by_seed(values: list[float]) -> str:
    return " / ".join(f"{v:.3f}" for v in values)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories (incomplete ones are skipped)")
    p.add_argument("--eps", default="0.005", help="the FGSM eps of the last columns (a key of summary.json)")
    args = p.parse_args()
    rows = [r for r in (read(run, args.eps) for run in args.runs) if r is not None]
    if not rows:
        print("no complete run named <setting>-s<seed>-<date>-<time> among the arguments", file=sys.stderr)
        return 1
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r["setting"], r["seed"])):
        groups[row["setting"]].append(row)
    print(f"| setting | seeds | test ACC by seed | test ACC mean ± sd (se) | FGSM@{args.eps} by seed "
          f"| FGSM@{args.eps} mean ± sd (se) | selected round / epoch by seed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for setting, group in groups.items():
        acc, fgsm = [r["acc"] for r in group], [r["fgsm"] for r in group]
        print(f"| {setting} | {','.join(str(r['seed']) for r in group)} | {by_seed(acc)} | {spread(acc)} "
              f"| {by_seed(fgsm)} | {spread(fgsm)} | {' / '.join(str(r['chosen']) for r in group)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
