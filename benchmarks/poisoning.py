"""Poisoned hospitals against aggregators (the poisoning issue): a grid of attack x aggregator x malicious share.

PneumoniaMNIST, 10 hospitals, Dirichlet(0.5) label skew, the compact student CNN (resnet18 costs ~10x per
round), FedAvg's recipe otherwise (configs/quickstart.toml, sweep and distillation off); every cell is a
federated run through the in-process round loop of benchmarks/_sequential.py, which equals the Flower
simulation. Per cell: final clean test accuracy, FGSM accuracy at eps 0.005, the backdoor's success rate where
it applies, and the mean detection recall of the aggregator's drops. Share 0 is each aggregator's price on
this non-IID split with no attacker. A cell an aggregator cannot take (e.g. Bulyan with 3 of 10 malicious)
is shown as "–". Every cell's figures are kept in docs/results/poisoning.csv (committed) and a cell found there
or finished under --runs-dir is not trained again, so a stopped grid resumes.

Prints and writes runs/results/poisoning.md (tables) and runs/results/poisoning-<attack>.png (heatmaps):

    python benchmarks/poisoning.py [--attacks sign_flip alie ...] [--aggregators fedavg fedmedian ...]
        [--shares 0 0.1 0.2 0.3] [--seeds 0] [--rounds 15]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report
from _sequential import sequential_run

from fedrobust.config import load_config
from fedrobust.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ("label_flip", "adv_poison", "backdoor", "sign_flip", "scale", "gaussian", "alie", "ipm")
AGGREGATORS = ("fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan", "normclip", "centeredclip",
               "fltrust")
CLIENTS = 10


def _overrides(attack: str, aggregator: str, share: float, seed: int, rounds: int, runs_dir: Path) -> list[str]:
    name = f"{aggregator}-{attack if share else 'clean'}-{round(share * 100)}-s{seed}"
    out = [f"run.out_dir='{runs_dir}'", f"run.name='{name}'", f"run.seed={seed}", "data.dataset=pneumoniamnist",
           "model.name=student", f"partition.num_clients={CLIENTS}", "partition.scheme=dirichlet",
           "partition.alpha=0.5", f"federation.rounds={rounds}", "federation.local_epochs=1",
           f"federation.strategy={aggregator}", "federation.eval_eps=0.005", "federation.select=last",
           "eval.fgsm_eps=[0.005]", "distill.enabled=false", "export.enabled=false", "sweep.enabled=false"]
    malicious = round(share * CLIENTS)
    if aggregator in ("krum", "multikrum", "bulyan"):
        out.append(f"federation.num_malicious={malicious}")  # what the defender assumes: the truth
    if share:
        out += [f"adversary.kind={attack}", f"adversary.share={share}"]
        if attack == "ipm":
            out.append("adversary.scale=0.5")  # Xie et al.'s small epsilon, made to pass Krum and the median
    return out


def _finished(runs_dir: Path, name: str) -> Path | None:
    for run in sorted(runs_dir.glob(f"{name}-2*")):
        if (run / "summary.json").is_file():
            return run
    return None


FIGURES = ("acc", "fgsm", "asr", "recall")


def read_record(path: Path) -> dict[tuple[str, int], dict]:
    """The committed per-cell figures, by (run name, rounds): a cell recorded there is not trained again."""
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {(r["name"], int(r["rounds"])): {k: (float(r[k]) if r[k] else None) for k in FIGURES} for r in rows}


def write_record(path: Path, record: dict[tuple[str, int], dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["name", "rounds", *FIGURES])
        for (name, rounds), f in sorted(record.items()):
            writer.writerow([name, rounds, *("" if f[k] is None else f"{f[k]:.4f}" for k in FIGURES)])


def cell(attack: str, aggregator: str, share: float, seed: int, rounds: int, runs_dir: Path,
         record: dict[tuple[str, int], dict]) -> dict | None:
    """One cell's figures: from the record, else from a finished run, else trained now (and added to the record);
    None if the config is refused."""
    overrides = _overrides(attack, aggregator, share, seed, rounds, runs_dir)
    name = overrides[1].split("=", 1)[1].strip("'")
    try:
        cfg = load_config(ROOT / "configs" / "quickstart.toml", overrides)
    except ConfigError as exc:
        print(f"skip {name}: {exc}", file=sys.stderr)
        return None
    if (name, rounds) in record:
        return record[(name, rounds)]
    run = _finished(runs_dir, name)
    if run is None:
        print(f"training {name}", file=sys.stderr, flush=True)
        run = sequential_run(cfg, log=io.StringIO())["run"]
    summary = json.loads((run / "summary.json").read_text())
    rounds_ = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    recalls = [r["detection"]["recall"] for r in rounds_ if r.get("detection", {}).get("recall") is not None]
    record[(name, rounds)] = {"acc": summary["test"]["acc"], "fgsm": summary["test_fgsm"]["0.005"]["acc"],
                              "asr": summary.get("adversary", {}).get("backdoor_asr"),
                              "recall": statistics.mean(recalls) if recalls else None}
    return record[(name, rounds)]


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _fmt(v: float | None, sd: float | None = None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS), choices=AGGREGATORS)
    parser.add_argument("--shares", nargs="+", type=float, default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs/poisoning")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/results/poisoning.md")
    parser.add_argument("--record", type=Path, default=ROOT / "docs/results/poisoning.csv",
                        help="per-cell figures; a cell found here is not trained again (default: %(default)s)")
    args = parser.parse_args()
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    record = read_record(args.record)

    def figures(attack: str, agg: str, share: float) -> dict[str, tuple[float | None, float | None]]:
        got = []
        for s in args.seeds:
            known = len(record)
            if c := cell(attack, agg, share, s, args.rounds, args.runs_dir, record):
                got.append(c)
            if len(record) > known:
                write_record(args.record, record)  # a new cell lands in the record as it finishes
        out = {}
        for key in FIGURES:
            vals = [c[key] for c in got if c[key] is not None]
            out[key] = (_mean(vals), statistics.stdev(vals) if len(vals) > 1 else None)
        return out

    clean = {agg: figures("none", agg, 0.0) for agg in args.aggregators} if 0.0 in args.shares else {}
    shares = [s for s in args.shares if s > 0]
    grid = {(a, agg, s): figures(a, agg, s) for a in args.attacks for agg in args.aggregators for s in shares}
    lines = ["# Poisoned hospitals against aggregators", "", f"Command: `{command()}`  ", f"Machine: {describe()}", "",
             f"PneumoniaMNIST, {CLIENTS} hospitals, Dirichlet(0.5), student CNN, {args.rounds} rounds x 1 local epoch, "
             f"seeds {', '.join(map(str, args.seeds))}; final-round model on the 624 test images.", ""]
    if clean:
        lines += ["## The price of each aggregator with no attacker", "",
                  "| aggregator | test acc | FGSM acc (0.005) |", "| --- | --- | --- |"]
        lines += [f"| {agg} | {_fmt(*f['acc'])} | {_fmt(*f['fgsm'])} |" for agg, f in clean.items()]
        lines.append("")
    for attack in args.attacks:
        lines += [f"## {attack}: test accuracy (detection recall)", "",
                  "| aggregator | " + " | ".join(f"{round(s * 100)} %" for s in shares) + " |",
                  "|" + " --- |" * (1 + len(shares))]
        for agg in args.aggregators:
            cells = []
            for s in shares:
                f = grid[(attack, agg, s)]
                text = _fmt(*f["acc"])
                if f["recall"][0] is not None:
                    text += f" ({f['recall'][0]:.2f})"
                if attack == "backdoor" and f["asr"][0] is not None:
                    text += f", ASR {f['asr'][0]:.2f}"
                cells.append(text)
            lines.append(f"| {agg} | " + " | ".join(cells) + " |")
        lines.append("")
        _heatmap(attack, args.aggregators, shares, grid, clean, args.out.parent / f"poisoning-{attack}.png")
    print(write_report(args.out, lines))
    return 0


def _heatmap(attack: str, aggs: list[str], shares: list[float], grid: dict, clean: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = ([0.0] if clean else []) + shares
    values = np.array([[(clean[a]["acc"][0] if s == 0 else grid[(attack, a, s)]["acc"][0]) or np.nan for s in cols]
                       for a in aggs], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2, 0.45 * len(aggs) + 1.2))
    im = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(cols)), [f"{round(s * 100)} %" for s in cols])
    ax.set_yticks(range(len(aggs)), aggs)
    for i in range(len(aggs)):
        for j in range(len(cols)):
            if values[i, j] == values[i, j]:
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8, color="w")
    ax.set_title(f"{attack}: test accuracy by malicious share")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
