"""Pervin et al.'s three tables on Kvasir-SEG (segmentation issue), centralized and federated.

Trains every variant from configs/study/kvasir-*.toml (centralized, UNet at 128 px; the epoch best on val
polyp IoU kept, never chosen on test) for each seed, then sweeps the global model with FGSM and inverse FGSM
at the paper's eps on the test split. Optionally (--federated) the same variants as 5-hospital
federations (polyp-size Dirichlet skew), through the in-process round loop of benchmarks/_sequential.py.
Prints and writes runs/results/segmentation.md:
  Table 1  test polyp IoU and two-class mean IoU over training (epochs 1/10/20/30), none / FGSM / inverse FGSM
  Table 2  test IoU under FGSM and inverse FGSM at eps 0.0012 / 0.0118 / 0.1176, by training augmentation
  Table 3  test IoU of each classic augmentation (flip, rotation, crop, colour jitter) against the adversarial ones
  timing   epoch seconds of every variant as a ratio to the clean epoch, measured in this one process
Runs that already finished under --runs-dir (same name and seed) are reused, so a stopped study resumes.

    python benchmarks/segmentation_study.py [--seeds 0 1 2] [--variants none fgsm invfgsm] [--federated]
"""

from __future__ import annotations

import argparse
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


def _finished(runs_dir: Path, name: str, seed: int) -> Path | None:
    for run in sorted(runs_dir.glob(f"{name}-s{seed}-*")):
        if (run / "summary.json").is_file():
            return run
    return None


def train(variant: str, seed: int, runs_dir: Path, federated: bool, extra: list[str],
          reuse_only: bool = False) -> Path | None:
    """One finished run of ``variant`` (trained now unless found, or None with ``reuse_only``), with its FGSM /
    inverse-FGSM sweep."""
    name = f"{'fed' if federated else 'central'}-kvasir-{variant}"
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


def _mean(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _sweep_value(run: Path, attack: str, eps: float, column: str = "iou") -> float:
    for r in read_sweep(run / SWEEP_CSV):
        if r["attack"] == attack and abs(r["eps"] - eps) < 1e-9 and r["target"] == "global":
            return float(r[column])
    return float("nan")


def _clean(run: Path, column: str = "iou") -> float:
    return _sweep_value(run, "clean", 0.0, column)


def _epoch_seconds(run: Path) -> float:
    secs = [r["train"]["seconds"] for r in _lines(run) if "train" in r]
    secs += [r["clients"]["seconds"] for r in _lines(run) if "clients" in r and "seconds" in r.get("clients", {})]
    return statistics.median(secs) if secs else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--federated", action="store_true", help="5-hospital federations instead of centralized")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override every run")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs/seg-study")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--reuse-only", action="store_true", help="tables from finished runs only; train nothing")
    args = parser.parse_args()
    kind = "federated" if args.federated else "centralized"
    out = args.out or ROOT / f"runs/results/segmentation-{kind}.md"
    found = {(v, s): train(v, s, args.runs_dir, args.federated, args.set, args.reuse_only)
             for v in args.variants for s in args.seeds}
    runs = {k: r for k, r in found.items() if r is not None}

    def by_seed(variant: str, fn) -> str:
        values = [fn(runs[(variant, s)]) for s in args.seeds if (variant, s) in runs]
        text = _mean(values)
        return text if len(values) in (0, 1, len(args.seeds)) else f"{text} ({len(values)} seeds)"

    step = "round" if args.federated else "epoch"
    lines = [f"# Pervin et al.'s tables on Kvasir-SEG, {kind}", "", f"Command: `{command()}`  ",
             f"Machine: {describe()}", "",
             f"Seeds {', '.join(map(str, args.seeds))} (mean ± sd where more than one). Polyp IoU and Dice per image, "
             "averaged over the split; mIoU = two-class (background, polyp) mean IoU per image, averaged. "
             f"Model selected on val polyp IoU; test split 82 images, val 100.", "",
             f"## Table 1: test IoU over training ({step}s; the model reported elsewhere is the one best on val)", "",
             "| augmentation | " + " | ".join(f"{step} {e} IoU / mIoU" for e in CURVE) + " |",
             "|" + " --- |" * (1 + len(CURVE))]
    key = "round" if args.federated else "epoch"
    for v in [v for v in args.variants if v in ("none", "fgsm", "invfgsm", "both")]:
        cells = []
        for e in CURVE:
            def at(run: Path, e: int = e, metric: str = "iou") -> float:
                rows = [r for r in _lines(run) if r.get(key) == e]
                section = "server" if args.federated else "test"
                return float(rows[0][section][metric]) if rows and metric in rows[0].get(section, {}) else float("nan")
            cells.append(f"{by_seed(v, at)} / {by_seed(v, lambda r, at=at: at(r, metric='miou'))}")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "## Table 2: test polyp IoU under attack (white-box on the global model)", "",
              "| augmentation | clean | " + " | ".join(f"FGSM {e}" for e in PAPER_EPS) + " | "
              + " | ".join(f"inv. FGSM {e}" for e in PAPER_EPS) + " | clean mIoU |",
              "|" + " --- |" * (3 + 2 * len(PAPER_EPS))]
    for v in args.variants:
        cells = [by_seed(v, _clean)]
        cells += [by_seed(v, lambda r, e=e: _sweep_value(r, "fgsm", e)) for e in PAPER_EPS]
        cells += [by_seed(v, lambda r, e=e: _sweep_value(r, "invfgsm", e)) for e in PAPER_EPS]
        cells.append(by_seed(v, lambda r: _clean(r, "miou")))
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "## Table 3: test IoU and Dice by training augmentation", "",
              "| augmentation | test IoU | test Dice | test mIoU | FGSM 0.0118 IoU |",
              "| --- | --- | --- | --- | --- |"]
    for v in args.variants:
        lines.append(f"| {v} | {by_seed(v, _clean)} | {by_seed(v, lambda r: _clean(r, 'dice'))} | "
                     f"{by_seed(v, lambda r: _clean(r, 'miou'))} | "
                     f"{by_seed(v, lambda r: _sweep_value(r, 'fgsm', 0.0118))} |")
    if any(k[0] == "none" for k in runs):
        base = statistics.median(_epoch_seconds(r) for (v, _), r in runs.items() if v == "none")
        lines += ["", f"## {step.capitalize()} time (median seconds of training per {step}, ratio to none)", "",
                  f"| augmentation | s / {step} | ratio |", "| --- | --- | --- |"]
        for v in args.variants:
            secs = [_epoch_seconds(r) for (w, _), r in runs.items() if w == v]
            if secs:
                sec = statistics.median(secs)
                lines.append(f"| {v} | {sec:.1f} | {sec / base:.2f} |")
    lines += ["", "Runs: " + ", ".join(f"`{p.name}`" for p in runs.values())]
    print(write_report(out, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
