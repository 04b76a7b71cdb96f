"""Pervin et al.'s three tables on Kvasir-SEG (segmentation issue), centralized and federated.

Trains every variant from configs/study/kvasir-*.toml (centralized, UNet at 128 px; the epoch best on val
polyp IoU kept, never chosen on test) for each seed, then sweeps the global model with FGSM and inverse FGSM
at the paper's eps on the test split. Optionally (--federated) the same variants as 5-hospital
federations (polyp-size Dirichlet skew), through the in-process round loop of benchmarks/_sequential.py.
Every finished run is recorded as one row of docs/results/segmentation_study.csv (committed: the tables do not
need the run directories) and a recorded run is not trained again. Prints and writes
runs/results/segmentation-{centralized,federated}.md:
  Table 1  test polyp IoU and two-class mean IoU over training (epochs 1/10/20/30), none / FGSM / inverse FGSM
  Table 2  test IoU under FGSM and inverse FGSM at eps 0.0012 / 0.0118 / 0.1176, by training augmentation
  Table 3  test IoU of each classic augmentation (flip, rotation, crop, colour jitter) against the adversarial ones
  timing   epoch seconds of every variant as a ratio to the clean epoch, measured in this one process
Runs that already finished under --runs-dir (same name and seed) are reused, so a stopped study resumes.

    python benchmarks/segmentation_study.py [--seeds 0 1 2] [--variants none fgsm invfgsm] [--federated]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report

from fedrobust.config import load_config
from fedrobust.pipeline import sweep_and_report
from fedrobust.sweep.results import SWEEP_CSV, read_sweep
from fedrobust.train.centralized import run_centralized

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("none", "fgsm", "invfgsm", "both", "flip", "rotation", "crop", "jitter")
PAPER_EPS = (0.0012, 0.0118, 0.1176)
SWEEP = ["sweep.targets=['global']", "sweep.attacks=['fgsm', 'invfgsm']", f"sweep.eps={list(PAPER_EPS)}"]
CURVE = (1, 10, 20, 30)
RECORD = ROOT / "docs/results/segmentation_study.csv"  # one row per finished run: the tables survive the runs


def _finished(runs_dir: Path, name: str, seed: int) -> Path | None:
    for run in sorted(runs_dir.glob(f"{name}-s{seed}-*")):
        if (run / "summary.json").is_file():
            return run
    return None


def _name(setting: str, variant: str) -> str:
    return f"{'fed' if setting == 'federated' else 'central'}-kvasir-{variant}"


def train(variant: str, seed: int, runs_dir: Path, federated: bool, extra: list[str],
          reuse_only: bool = False) -> Path | None:
    """One finished run of ``variant`` (trained now unless found, or None with ``reuse_only``), with its FGSM /
    inverse-FGSM sweep."""
    name = _name("federated" if federated else "centralized", variant)
    run = _finished(runs_dir, name, seed)
    if reuse_only and (run is None or not (run / SWEEP_CSV).is_file()):
        return None
    overrides = [f"run.out_dir='{runs_dir}'", f"run.name='{name}-s{seed}'", f"run.seed={seed}", "sweep.enabled=false",
                 *extra]
    cfg = load_config(ROOT / f"configs/study/kvasir-{variant}.toml", overrides)
    if run is None:
        if federated:
            from _sequential import sequential_run

            cfg = load_config(ROOT / "configs/fed_kvasir_unet.toml", [*overrides, *_variant_keys(variant)])
            run = sequential_run(cfg)["run"]
        else:
            run = run_centralized(cfg, log=lambda s: print(s, file=sys.stderr)).path
    if not (run / SWEEP_CSV).is_file():
        sweep_and_report(load_config(run / "config.toml", SWEEP), run, log=lambda s: print(s, file=sys.stderr))
    return run


def _variant_keys(variant: str) -> list[str]:
    """The [augment] keys of a study variant, to lay over the federated config."""
    import tomllib

    tree = tomllib.loads((ROOT / f"configs/study/kvasir-{variant}.toml").read_text())
    out = []
    for key, value in tree.get("augment", {}).items():
        out.append(f"augment.{key}={json.dumps(value) if not isinstance(value, str) else repr(value)}")
    return out


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _sweep_value(run: Path, attack: str, eps: float, column: str = "iou") -> float:
    for r in read_sweep(run / SWEEP_CSV):
        if r["attack"] == attack and abs(r["eps"] - eps) < 1e-9 and r["target"] == "global":
            return float(r[column])
    return float("nan")


def _epoch_seconds(run: Path) -> float:
    secs = [r["train"]["seconds"] for r in _lines(run) if "train" in r]
    secs += [r["clients"]["seconds"] for r in _lines(run) if "clients" in r and "seconds" in r.get("clients", {})]
    return statistics.median(secs) if secs else float("nan")


def record(run: Path, setting: str, variant: str, seed: int) -> dict[str, object]:
    """Every figure the tables use from one finished run, as one row of the study's record."""
    row: dict[str, object] = {"setting": setting, "variant": variant, "seed": seed, "run": run.name}
    for metric in ("iou", "dice", "miou"):
        row[f"clean_{metric}"] = _sweep_value(run, "clean", 0.0, metric)
    for attack in ("fgsm", "invfgsm"):
        for eps in PAPER_EPS:
            row[f"{attack}_{eps}"] = _sweep_value(run, attack, eps)
    step, section = ("round", "server") if setting == "federated" else ("epoch", "test")
    lines = _lines(run)
    for e in CURVE:
        at = next((r[section] for r in lines if r.get(step) == e and section in r), {})
        for metric in ("iou", "miou"):
            row[f"{step}{e}_{metric}"] = float(at.get(metric, float("nan")))
    row["seconds_per_step"] = _epoch_seconds(run)
    return row


def read_record(path: Path) -> dict[tuple, dict[str, object]]:
    """The record's rows by (setting, variant, seed)."""
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["seed"] = int(row["seed"])
        for key in row:
            if key not in ("setting", "variant", "seed", "run"):
                row[key] = float(row[key]) if row[key] not in ("", None) else float("nan")
    return {(r["setting"], r["variant"], r["seed"]): r for r in rows}


def write_record(path: Path, rows: list[dict[str, object]]) -> None:
    rows = sorted(rows, key=lambda r: (r["setting"], VARIANTS.index(str(r["variant"])), r["seed"]))
    fields = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) and v == v else "" if isinstance(v, float)
                                 else v) for k, v in r.items()})


def _mean(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def tables(rows: list[dict[str, object]], setting: str, variants: list[str], seeds: list[int]) -> list[str]:
    """Pervin et al.'s Tables 1–3 (and epoch times) from the record's rows of one setting."""
    have = {(r["variant"], r["seed"]): r for r in rows if r["setting"] == setting and r["seed"] in seeds}

    def by_seed(variant: str, key: str) -> str:
        values = [float(have[(variant, s)][key]) for s in seeds if (variant, s) in have]
        values = [v for v in values if v == v]
        text = _mean(values)
        return text if len(values) in (0, 1, len(seeds)) else f"{text} ({len(values)} seeds)"

    step = "round" if setting == "federated" else "epoch"
    lines = [f"## Table 1: test IoU over training ({step}s; the model reported elsewhere is the one best on val)", "",
             "| augmentation | " + " | ".join(f"{step} {e} IoU / mIoU" for e in CURVE) + " |",
             "|" + " --- |" * (1 + len(CURVE))]
    for v in [v for v in variants if v in ("none", "fgsm", "invfgsm", "both")]:
        cells = [f"{by_seed(v, f'{step}{e}_iou')} / {by_seed(v, f'{step}{e}_miou')}" for e in CURVE]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "## Table 2: test polyp IoU under attack (white-box on the global model)", "",
              "| augmentation | clean | " + " | ".join(f"FGSM {e}" for e in PAPER_EPS) + " | "
              + " | ".join(f"inv. FGSM {e}" for e in PAPER_EPS) + " | clean mIoU |",
              "|" + " --- |" * (3 + 2 * len(PAPER_EPS))]
    for v in variants:
        cells = [by_seed(v, "clean_iou")]
        cells += [by_seed(v, f"{attack}_{e}") for attack in ("fgsm", "invfgsm") for e in PAPER_EPS]
        cells.append(by_seed(v, "clean_miou"))
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "## Table 3: test IoU and Dice by training augmentation", "",
              "| augmentation | test IoU | test Dice | test mIoU | FGSM 0.0118 IoU |",
              "| --- | --- | --- | --- | --- |"]
    for v in variants:
        lines.append(f"| {v} | {by_seed(v, 'clean_iou')} | {by_seed(v, 'clean_dice')} | {by_seed(v, 'clean_miou')} "
                     f"| {by_seed(v, 'fgsm_0.0118')} |")
    base = [float(r["seconds_per_step"]) for (v, _), r in have.items() if v == "none"]
    if base:
        lines += ["", f"## {step.capitalize()} time (median seconds of training per {step}, ratio to none; "
                  "only comparable between runs that shared the machine alike)", "",
                  f"| augmentation | s / {step} | ratio |", "| --- | --- | --- |"]
        for v in variants:
            secs = [float(r["seconds_per_step"]) for (w, _), r in have.items() if w == v]
            if secs:
                lines.append(f"| {v} | {statistics.median(secs):.1f} | "
                             f"{statistics.median(secs) / statistics.median(base):.2f} |")
    return [*lines, "", "Runs: " + ", ".join(f"`{r['run']}`" for r in have.values())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--federated", action="store_true", help="5-hospital federations instead of centralized")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override every run")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs/seg-study")
    parser.add_argument("--record", type=Path, default=RECORD,
                        help="per-run figures, merged with every finished run found (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--reuse-only", action="store_true",
                        help="tables from the record and finished runs only; train nothing")
    args = parser.parse_args()
    setting = "federated" if args.federated else "centralized"
    out = args.out or ROOT / f"runs/results/segmentation-{setting}.md"
    rows = read_record(args.record)
    for v in args.variants:
        for s in args.seeds:
            if (setting, v, s) in rows and _finished(args.runs_dir, _name(setting, v), s) is None:
                continue  # in the record; its run directory is gone
            run = train(v, s, args.runs_dir, args.federated, args.set, args.reuse_only)
            if run is not None:
                # each run lands in the record as it finishes, merged with what other studies wrote meanwhile
                rows = read_record(args.record)
                rows[(setting, v, s)] = record(run, setting, v, s)
                write_record(args.record, list(rows.values()))
    lines = [f"# Pervin et al.'s tables on Kvasir-SEG, {setting}", "", f"Command: `{command()}`  ",
             f"Machine: {describe()}", "",
             f"Seeds {', '.join(map(str, args.seeds))} (mean ± sd where more than one). Polyp IoU and Dice per image, "
             "averaged over the split; mIoU = two-class (background, polyp) mean IoU per image, averaged. "
             f"Model selected on val polyp IoU; test split 82 images, val 100. Per-run figures: `{args.record.name}`.",
             "", *tables(list(rows.values()), setting, args.variants, args.seeds)]
    print(write_report(out, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
