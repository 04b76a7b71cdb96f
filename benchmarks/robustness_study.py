"""The reference robustness study: federated models, their defenses, and their distilled edge
students under FGSM, PGD, the per-image worst case (autoattack), transfer and black-box attack.

For each finished federated run: distill + export if the run has no student yet, sweep the
reference paper's eps grid (0.001 ... 0.005) and 2/255, 4/255, 8/255 with FGSM, PGD (cross-entropy
and margin), autoattack (per image the worst of FGSM, PGD, APGD-CE, APGD-DLR or margin APGD and
Square), transfer from the global model, Square against the int8 edge model, random noise and
inverse FGSM. Then: the worst case next to PGD at 0.005 and the grey-level eps, raw and as
delivered in 8 bits, which defense's advantage shrinks or vanishes under the worst case,
autoattack's time per 100 images, and one table per attack in the reference paper's shape (rows:
dataset x model x defense; columns: clean and each eps). Accuracies on the official test splits.

    python benchmarks/robustness_study.py RUN_DIR [RUN_DIR ...] [--set sweep.square_queries=300] [--from-runs]
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report

from fedrobust.checkpoint import run_config
from fedrobust.distill import DISTILL_DIR, distill_run
from fedrobust.errors import FedrobustError
from fedrobust.export import EXPORT_DIR, export
from fedrobust.report.single import defense_of
from fedrobust.sweep import SWEEP_CSV, sweep
from fedrobust.sweep.checks import run_checks, score_table
from fedrobust.sweep.results import delivered_column, read_sweep
from fedrobust.sweep.run import sweep_images
from fedrobust.tasks.registry import task_of

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = [0.001, 0.002, 0.003, 0.004, 0.005]  # the reference paper's grid, all below 1.3 grey levels
WORST = [0.005, 2 / 255, 4 / 255, 8 / 255]  # where the worst case is set next to PGD: the default grid (100 APGD
# steps per image, eps and model make the worst case the sweep's cost; --eps adds the reference grid)
SWEEP = ["sweep.attacks=['fgsm', 'pgd', 'pgd-margin', 'autoattack', 'transfer-pgd', "
         "'square', 'noise', 'invfgsm']", "sweep.targets=['global', 'student', 'onnx_int8']",
         "sweep.square_queries=100", "sweep.corruptions=false"]
TARGETS = {"global": "global model", "student": "student (torch)", "onnx_int8": "student (ONNX int8)"}
FGSM_GAIN = 0.02  # "looks good under FGSM": at least 2 points above the undefended model at the same eps
HOLD = 0.01  # "holds under PGD": keeps more than 1 point of that gain


def defense(cfg, target: str) -> str:
    a = cfg.augment
    if a.mode == "none":
        base = "none"
    else:
        sampled = "U(0, ε]" if a.eps_sampling == "uniform" else "fixed ε"
        base = f"{a.mode} @ {a.eps:g} ({sampled})"
    return base if target == "global" else base + " + distillation"


def prepare(run: Path, eps: list[float], overrides: list[str], log) -> None:
    cfg = run_config(run, [*SWEEP, f"sweep.eps={eps}", *overrides])
    if not (run / DISTILL_DIR / "student.pt").is_file():
        distill_run(run, cfg=cfg, log=log)
    if not (run / EXPORT_DIR / "student.int8.onnx").is_file():
        export(cfg, run, log)
    sweep(cfg, run, log)


WORST_PARTS = ("fgsm", "pgd", "apgd-ce", "autoattack")


def _seconds_by_eps(cells: list[dict]) -> dict[float, float]:
    out: dict[float, float] = {}
    for r in cells:
        if r.get("seconds") not in ("", None):
            out[r["eps"]] = out.get(r["eps"], 0.0) + float(r["seconds"])
    return out


def at(curve: dict[float, float], e: float) -> float:
    """The score at ``e`` (eps read back from sweep.csv is rounded); nan where it was not swept."""
    return next((v for k, v in curve.items() if abs(k - e) < 1e-6), float("nan"))


def eps_label(e: float) -> str:
    return f"{e:.4g} ({e * 255:.2g}/255)"


@dataclass
class Entry:
    """One evaluated model of one run: its scores raw and as delivered in 8 bits, by (target, attack)."""

    dataset: str
    model: str
    defense: str
    target: str
    run: Path
    raw: dict
    sent: dict
    seconds: dict  # {eps: seconds} of the worst case (its cell and the cells it reuses)
    pgd_seconds: float  # of the PGD cells, all eps: the worst case's cost as a ratio that load does not change
    n: int
    cfg: object

    @property
    def clean(self) -> float:
        return self.raw[(self.target, "clean")][0.0]

    def curve(self, attack: str, delivered: bool = False) -> dict[float, float]:
        return (self.sent if delivered else self.raw).get((self.target, attack), {})

    def baseline(self, entries: list[Entry]) -> Entry | None:
        return next((b for b in entries if (b.dataset, b.model, b.target) == (self.dataset, self.model, self.target)
                     and b.cfg.augment.mode == "none" and b.run != self.run), None)


def worst_case_lines(entries: list[Entry]) -> list[str]:
    lines = ["## Worst case next to PGD", "",
             "Each cell: PGD-10 / autoattack (per image, the worst of FGSM, PGD, APGD-CE, margin APGD and Square). "
             "Gap = PGD − worst case, the robust accuracy PGD alone overstates.", "",
             "| dataset | model | defense | evaluated model | clean | " + " | ".join(eps_label(e) for e in WORST)
             + " | largest gap |", "|" + " --- |" * (6 + len(WORST))]
    for x in entries:
        p, w = x.curve("pgd"), x.curve("autoattack")
        if not w:
            continue
        gaps = [at(p, e) - at(w, e) for e in WORST]
        cells = " | ".join(f"{at(p, e):.3f} / **{at(w, e):.3f}**" for e in WORST)
        lines.append(f"| {x.dataset} | {x.model} | {x.defense} | {TARGETS[x.target]} | {x.clean:.3f} | {cells} | "
                     f"{max(gaps) * 100:+.1f} pts |")
    lines += ["", "## Delivered as 8-bit images", "",
              "Worst case on the raw float images / on the same images rounded to 8 bits (what an attacker who "
              "sends a PNG delivers; for the int8 model also decoded as `fedrobust-edge` does).", "",
              "| dataset | model | defense | evaluated model | " + " | ".join(eps_label(e) for e in WORST)
              + " | largest delivered − raw |", "|" + " --- |" * (5 + len(WORST))]
    for x in entries:
        w, d = x.curve("autoattack"), x.curve("autoattack", delivered=True)
        if not w or not d:
            continue
        gaps = [at(d, e) - at(w, e) for e in WORST]
        cells = " | ".join(f"{at(w, e):.3f} / {at(d, e):.3f}" for e in WORST)
        lines.append(f"| {x.dataset} | {x.model} | {x.defense} | {TARGETS[x.target]} | {cells} | "
                     f"{max(gaps) * 100:+.1f} pts |")
    return [*lines, ""]


def advantage_lines(entries: list[Entry]) -> list[str]:
    """Each defense's margin over no defense (same dataset, model and evaluated model) under PGD and under the
    worst case; in plain words where it shrinks by more than a point or vanishes."""
    lines = ["## Which defense's advantage survives the worst case", "",
             "Advantage = accuracy with the defense − without, on the same kind of evaluated model, in points; "
             "each cell: under PGD → under the worst case.", "",
             "| dataset | model | defense | evaluated model | " + " | ".join(eps_label(e) for e in WORST)
             + " | verdict |", "|" + " --- |" * (5 + len(WORST))]
    said = []
    for x in entries:
        b = x.baseline(entries)
        if b is None or not x.curve("autoattack") or not b.curve("autoattack"):
            continue
        pgd = [(at(x.curve("pgd"), e) - at(b.curve("pgd"), e)) * 100 for e in WORST]
        worst = [(at(x.curve("autoattack"), e) - at(b.curve("autoattack"), e)) * 100 for e in WORST]
        one = 100 / x.n  # one test image, in points
        had = [i for i, v in enumerate(pgd) if v > one]
        vanished = [i for i in had if worst[i] <= one]
        shrunk = [i for i in had if i not in vanished and worst[i] < pgd[i] - 1]
        verdict = ("vanishes" if vanished else "shrinks" if shrunk else
                   "holds" if had else "none under PGD either")
        cells = " | ".join(f"{p:+.1f} → {w:+.1f}" for p, w in zip(pgd, worst, strict=True))
        lines.append(f"| {x.dataset} | {x.model} | {x.defense} | {TARGETS[x.target]} | {cells} | {verdict} |")
        if vanished or shrunk:
            where = ", ".join(f"ε {WORST[i]:.4g}: {pgd[i]:+.1f} → {worst[i]:+.1f}" for i in (vanished or shrunk))
            said.append(f"- {x.dataset} {x.model}, {x.defense}, {TARGETS[x.target]}: the advantage under PGD "
                        f"{'vanishes' if vanished else 'shrinks'} under the worst case ({where} points).")
    return [*lines, "", *(said or ["- No defense's PGD advantage shrinks by more than a point under the worst case."]),
            ""]


def timing_lines(entries: list[Entry]) -> list[str]:
    lines = ["## autoattack's time", "", "Seconds of the worst case per 100 test images, mean over its ε: "
             "the autoattack cell and the FGSM, PGD and APGD-CE cells whose images it reuses; in brackets the same "
             "time ÷ PGD-10's (measured in the same sweep, so other load on the machine cancels).", "",
             "| dataset | model | defense | " + " | ".join(TARGETS.values()) + " |",
             "|" + " --- |" * (3 + len(TARGETS))]
    runs = list(dict.fromkeys(x.run for x in entries))
    for run in runs:
        xs = {x.target: x for x in entries if x.run == run}
        first = next(iter(xs.values()))
        cells = [f"{100 * sum(xs[t].seconds.values()) / len(xs[t].seconds) / xs[t].n:.1f} "
                 f"({sum(xs[t].seconds.values()) / max(xs[t].pgd_seconds, 1e-9):.0f}× PGD)"
                 if t in xs and xs[t].seconds else "–" for t in TARGETS]
        lines.append(f"| {first.dataset} | {first.model} | {first.defense.removesuffix(' + distillation')} | "
                     + " | ".join(cells) + " |")
    return [*lines, ""]


def write_grid(path: Path, entries: list[Entry], eps: list[float]) -> None:
    """Every (model, attack) curve, raw and delivered, one row each: the tables' source, kept with the page."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["dataset", "model", "defense", "evaluated_model", "attack", "images", "acc_clean",
                      *(f"acc_eps_{e:.4g}" for e in eps)])
        for x in entries:
            for target, attack in x.raw:
                if target != x.target or attack == "clean":
                    continue
                for images, table in (("raw", x.raw), ("8-bit", x.sent)):
                    if (target, attack) in table:
                        out.writerow([x.dataset, x.model, x.defense, TARGETS[target], attack, images,
                                      f"{x.clean:.3f}", *(f"{at(table[(target, attack)], e):.3f}" for e in eps)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--eps", type=float, nargs="+", default=WORST,
                        help=f"the sweep's grid (default: {' '.join(f'{e:.4g}' for e in WORST)}; the reference "
                             f"paper's: {' '.join(map(str, REFERENCE))})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--from-runs", action="store_true", help="only tabulate (sweep.csv exists in each run)")
    parser.add_argument("--out", default=str(ROOT / "runs/results/robustness_study.md"))
    args = parser.parse_args()
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    entries: list[Entry] = []
    try:
        for run in args.runs:
            if not args.from_runs:
                prepare(run, args.eps, args.overrides, log)
            cfg = run_config(run)
            sweep_rows = read_sweep(run / SWEEP_CSV)
            raw = score_table(sweep_rows, "accuracy")
            sent = score_table(sweep_rows, delivered_column("classification"))
            for target in TARGETS:
                if (target, "clean") not in raw:
                    continue
                # the worst case costs its own cell and those whose images it reuses (FGSM, PGD, APGD-CE)
                cells = [r for r in sweep_rows if r["target"] == target and r["attack"] in WORST_PARTS]
                entries.append(Entry(cfg.data.dataset, cfg.model.name, defense(cfg, target), target, run, raw, sent,
                                     _seconds_by_eps(cells),
                        sum(_seconds_by_eps([r for r in cells if r["attack"] == "pgd"]).values()),
                                     int(sweep_rows[0]["n"]), cfg))
    except (FedrobustError, FileNotFoundError) as exc:
        print(f"robustness_study: error: {exc}", file=sys.stderr)
        return 2
    entries.sort(key=lambda x: (x.dataset, x.model, list(TARGETS).index(x.target), not x.defense.startswith("none"),
                                x.defense))
    rows = [(x.dataset, x.model, x.defense, x.target, x.run, x.raw, x.cfg) for x in entries]
    write_grid(Path(args.out).with_suffix(".csv"), entries, args.eps)

    lines = ["# Reference robustness study", "", f"Command: `{command()}`  ",
             f"Machine: {describe()}", "",
             f"Federated {', '.join(dict.fromkeys(r[1] for r in rows))}, 10 hospitals with Dirichlet(0.5) label skew, "
             "FedAvg (configs/fed_*_resnet18.toml, `model.name` as in the model column); "
             "defense = local adversarial augmentation of the clients (mode @ ε), and/or distillation into the "
             "139 k-parameter student on the server's val split; the ONNX int8 student is the deployed edge model. "
             "Accuracy on the official test split. White-box attacks are crafted on each model's torch weights "
             "(for the int8 model: on the torch student, scored by onnxruntime); PGD 10 steps, step 2.5ε/10, random "
             "start; APGD 100 steps; Square: sweep.square_queries per image against the target's runtime; transfer: "
             "PGD crafted on the global model. Settings of each sweep: the run's report.md.", "",
             *worst_case_lines(entries), *advantage_lines(entries), *timing_lines(entries)]
    for attack in ("autoattack", "fgsm", "pgd", "pgd-margin", "transfer-pgd", "square", "noise", "invfgsm"):
        present = [r for r in rows if (r[3], attack) in r[5]]
        if not present:
            continue
        lines += [f"## {attack}", "", "| dataset | model | defense | evaluated model | clean | "
                  + " | ".join(eps_label(e) for e in args.eps) + " |", "|" + " --- |" * (5 + len(args.eps))]
        for ds, model, dfn, target, _run, t, _cfg in present:
            cells = " | ".join(f"{at(t[(target, attack)], e):.3f}" for e in args.eps)
            lines.append(f"| {ds} | {model} | {dfn} | {TARGETS[target]} | {t[(target, 'clean')][0.0]:.3f} | {cells} |")
        lines.append("")

    lines += ["## Where FGSM robustness does not hold", ""]
    findings = []
    for ds, model, dfn, target, run, t, _cfg in rows:
        base = next((r for r in rows if r[0] == ds and r[1] == model and r[3] == target and r[6].augment.mode == "none"
                     and r[2].startswith("none")), None)
        e = 0.005
        chance = task_of("classification").chance(sweep_images(run_config(run, SWEEP)))
        clean = t[(target, "clean")][0.0]
        if clean - chance < 0.05:
            findings.append(f"- {ds} {model}, {dfn}, {TARGETS[target]}: clean accuracy {clean:.3f} is within 5 points "
                            f"of a constant guess ({chance:.3f}); its flat curves under attack mean it mostly predicts "
                            f"the majority class, not that it is robust.")
        f, p = t.get((target, "fgsm"), {}).get(e), t.get((target, "pgd"), {}).get(e)
        if f is None or p is None:
            continue
        if f - p > 0.05:
            findings.append(f"- {ds} {model}, {dfn}, {TARGETS[target]}: FGSM overstates robustness at ε {e:g} "
                            f"({f:.3f} under FGSM, {p:.3f} under PGD).")
        if base is not None and base[4] != run:
            bf, bp = base[5][(target, "fgsm")][e], base[5][(target, "pgd")][e]
            if f >= bf + FGSM_GAIN and p <= bp + HOLD:
                findings.append(f"- {ds} {model}, {dfn}, {TARGETS[target]}: looks better than no defense under FGSM "
                                f"at ε {e:g} ({f:.3f} vs {bf:.3f}) but not under PGD ({p:.3f} vs {bp:.3f}).")
        sq = t.get((target, "square"), {}).get(e)
        white = min(v for v in (f, p, t.get((target, "pgd-margin"), {}).get(e)) if v is not None)
        if sq is not None and sq > white + 0.05:
            findings.append(f"- {ds} {model}, {dfn}, {TARGETS[target]}: the black-box attack (Square, 100 queries) "
                            f"leaves {sq:.3f} at ε {e:g} where white-box leaves {white:.3f}: at this budget the "
                            f"query-only attacker is weaker, the model is not more robust.")
        if target == "onnx_int8" and (target, "pgd") in t:
            e0 = min(args.eps)
            q, clean = t[(target, "pgd")][e0], t[(target, "clean")][0.0]
            fp32_hurt = t[("student", "pgd")][e0] < t[("student", "clean")][0.0] - 0.005 if ("student", "pgd") in t \
                else False
            if q >= clean and fp32_hurt:
                findings.append(f"- {ds} {model}, {dfn}, {TARGETS[target]}: PGD at ε {e0:g} changes nothing on the "
                                f"int8 model (accuracy {q:.3f} = clean) although it hurts the same weights in fp32: "
                                f"the input quantization step (about 1/255) swallows perturbations that small. That is "
                                f"masking by rounding, not robustness: larger ε goes through.")
    lines += findings or ["- none found at ε 0.005 by the rules below."]
    lines += ["", f"Rules: FGSM − PGD > 5 points; defense ≥ {FGSM_GAIN * 100:.0f} points above no defense under FGSM "
              f"but ≤ {HOLD * 100:.0f} point above it under PGD; Square > best white-box + 5 points.", "",
              "## Sanity checks (per run; ✗ = violated)", ""]
    for run in dict.fromkeys(r[4] for r in rows):
        cfg = run_config(run)
        chance = task_of("classification").chance(sweep_images(run_config(run, SWEEP)))
        bad = [c for c in run_checks(read_sweep(run / SWEEP_CSV), chance, cfg.sweep.tolerance, "accuracy", "accuracy")
               if not c.ok]
        status = "all hold" if not bad else "; ".join(f"✗ {c.name} ({c.target}: {c.detail})" for c in bad)
        lines.append(f"- `{run}` ({defense_of(cfg, 'global')}): {status}")
    print(write_report(args.out, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
