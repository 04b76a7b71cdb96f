"""report.md and plots/ of one run: the sweep as tables in the reference paper's shape (rows:
model x defense, columns: clean and each eps), the sanity checks, and the curves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fedrobust.checkpoint import load_model
from fedrobust.config import ExperimentConfig
from fedrobust.report.poisoning import poisoning_section
from fedrobust.rundir import RunDir, atomic_write_bytes, atomic_write_json
from fedrobust.sweep.cells import APGD, MARGIN_TWINS
from fedrobust.sweep.checks import STRONGEST, run_checks, score_table, strongest
from fedrobust.sweep.results import CORRUPTIONS_CSV, SWEEP_CSV, delivered_column, read_sweep, sweep_images
from fedrobust.sweep.targets import LABELS
from fedrobust.tasks.base import Split
from fedrobust.tasks.registry import task_for
from fedrobust.tasks.specs import SPECS, TaskSpec

REPORT = "report.md"
PLOTS = "plots"
HALF_LEVEL = 0.5 / 255  # below this an 8-bit image cannot carry the perturbation at all
THREAT_MODEL = ("evasion at test time, L-inf ball of radius eps around each test image in pixel units on [0, 1]; "
                "white-box attacks hold the torch weights (for the ONNX students: those of the torch student they "
                "were exported from), Square only queries the deployed runtime's scores")


def grey_levels(eps: float) -> str:
    """eps as 8-bit grey levels, flagged when no 8-bit image can carry it."""
    return f"{eps * 255:.2g} gl" + (" †" if eps < HALF_LEVEL else "")


@dataclass(frozen=True)
class Headline:
    """The robust score every report leads with, per target and eps, raw and as delivered in 8 bits."""

    attack: str
    raw: dict[str, dict[float, float]]
    delivered: dict[str, dict[float, float]]


def headline(rows: list[dict], spec: TaskSpec) -> Headline:
    """autoattack's per-image worst case where it was swept, else the worst white-box attack per eps (a weaker
    claim, named as such)."""
    raw, sent = score_table(rows, spec.column), score_table(rows, delivered_column(spec.name))
    targets = list(dict.fromkeys(k[0] for k in raw))
    if any(k[1] == "autoattack" for k in raw):
        name = f"autoattack ({spec.worst_case})"
        pick = lambda t: {g: t[(g, "autoattack")] for g in targets if (g, "autoattack") in t}  # noqa: E731
    else:
        name = "worst white-box attack per eps (" + ", ".join(a for a in STRONGEST if any(k[1] == a for k in raw)) + ")"
        pick = lambda t: {g: c for g in targets if (c := strongest(t, g))}  # noqa: E731
    return Headline(name, pick(raw), pick(sent))


def _headline_table(rows: list[dict], spec: TaskSpec, head: Headline) -> list[str]:
    if not head.raw:
        return []
    t = score_table(rows, spec.column)
    eps = sorted({e for v in head.raw.values() for e in v})
    out = [f"## Headline: robust {spec.label} under {head.attack}", "",
           f"Threat model: {THREAT_MODEL}. Each cell: raw float images / the same images delivered as 8-bit PNGs "
           "(rounded to grey levels, decoded as `fedrobust-edge` decodes them).", "",
           "| model | clean | " + " | ".join(f"{e:.4g} ({grey_levels(e)})" for e in eps) + " |",
           "|" + " --- |" * (2 + len(eps))]
    for target, curve in head.raw.items():
        clean = t.get((target, "clean"), {}).get(0.0, float("nan"))
        sent = head.delivered.get(target, {})
        cells = " | ".join(f"{curve.get(e, float('nan')):.3f} / {sent.get(e, float('nan')):.3f}" for e in eps)
        out.append(f"| {LABELS[target]} | {clean:.3f} | {cells} |")
    if any(e < HALF_LEVEL for e in eps):
        out += ["", "† eps below half a grey level: not deliverable as an 8-bit image (rounding undoes it), so "
                "those columns describe an attacker who can feed floats to the model."]
    return [*out, ""]


def _corruption_section(run_dir: Path, rows: list[dict], spec: TaskSpec, plots: Path) -> list[str]:
    """Mean score over the five severities per corruption and target, and a plot per target."""
    path = run_dir / CORRUPTIONS_CSV
    if not path.is_file():
        return []
    table: dict[str, dict[str, dict[float, float]]] = {}
    for r in read_sweep(path):
        table.setdefault(r["target"], {}).setdefault(r["corruption"], {})[r["severity"]] = r[spec.column]
    clean = score_table(rows, spec.column)
    names = list(next(iter(table.values())))
    out = [f"## Common corruptions (test {spec.label}, mean over severities 1–5)", "",
           "Not an attack: the noise, blur, contrast, brightness, gamma, pixelation and JPEG a scanner or a "
           "transfer adds (`fedrobust/sweep/corruptions.py` says how severities were set for this image size).",
           "", "| model | clean | " + " | ".join(n.replace("_", " ") for n in names) + " | mean |",
           "|" + " --- |" * (3 + len(names))]
    for target, by in table.items():
        means = [sum(by[n].values()) / len(by[n]) for n in names]
        base = clean.get((target, "clean"), {}).get(0.0, float("nan"))
        out.append(f"| {LABELS[target]} | {base:.3f} | " + " | ".join(f"{m:.3f}" for m in means)
                   + f" | {sum(means) / len(means):.3f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(4.2 * len(table), 3.8), squeeze=False, sharey=True)
    for ax, (target, by) in zip(axes[0], table.items(), strict=True):
        for name in names:
            sev = sorted(by[name])
            ax.plot(sev, [by[name][v] for v in sev], marker="o", ms=3, label=name.replace("_", " "))
        ax.set_title(LABELS[target], fontsize=9)
        ax.set_xlabel("severity")
        ax.set_xticks(list(range(1, 6)))
    axes[0][0].set_ylabel(f"test {spec.label}")
    axes[0][-1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(plots / "corruptions.png", dpi=110)
    plt.close(fig)
    return [*out, "", f"![corruptions]({PLOTS}/corruptions.png)", ""]


def _not_run(cfg: ExperimentConfig, rows: list[dict]) -> str:
    """The sentence for margin twins the sweep skipped (``fedrobust.sweep.cells.redundant``)."""
    swept = {r["attack"] for r in rows}
    skipped = [a for a in cfg.sweep.attacks if a not in swept and a in MARGIN_TWINS]
    if not skipped:
        return ""
    return (f" Not run: {', '.join(skipped)}; on this two-class head they equal "
            f"{', '.join(MARGIN_TWINS[a] for a in skipped)} (the margin is a monotone function of the cross-entropy).")


def robust_summary(head: Headline, spec: TaskSpec) -> dict:
    """The headline robust score for summary.json, per target and eps (raw and delivered in 8 bits)."""
    key = lambda curve: {f"{e:.6g}": round(v, 6) for e, v in sorted(curve.items())}  # noqa: E731
    return {"attack": head.attack, "metric": spec.label, "threat_model": THREAT_MODEL,
            "by_target": {t: key(c) for t, c in head.raw.items()},
            "delivered_8bit": {t: key(c) for t, c in head.delivered.items()}}


def defense_of(cfg: ExperimentConfig, target: str) -> str:
    a = cfg.augment
    train = "none" if a.mode == "none" else f"{a.mode} adv. augmentation (eps ≤ {a.eps:g})"
    if target == "global":
        return train
    d = cfg.distill
    extra = f", adversarial {d.adversarial}" if d.adversarial != "none" else ""
    return f"{train} + distillation (T={d.temperature:g}{extra})"


def _table(rows: list[dict], attack: str, cfg: ExperimentConfig) -> list[str]:
    t = score_table(rows, SPECS[cfg.data.task].column)
    eps = sorted({r["eps"] for r in rows if r["attack"] == attack})
    targets = [k[0] for k in t if k[1] == attack]
    if not targets:
        return []
    head = "| model | defense | clean | " + " | ".join(f"{e:.4g} ({grey_levels(e)})" for e in eps) + " |"
    out = [f"### {attack}", "", head, "|" + " --- |" * (3 + len(eps))]
    for target in targets:
        clean = t.get((target, "clean"), {}).get(0.0, float("nan"))
        cells = " | ".join(f"{t[(target, attack)].get(e, float('nan')):.3f}" for e in eps)
        out.append(f"| {LABELS[target]} | {defense_of(cfg, target)} | {clean:.3f} | {cells} |")
    return [*out, ""]


def _plot_sweep(rows: list[dict], out: Path, chance: float, spec: TaskSpec) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = score_table(rows, spec.column)
    paths = []
    for target in dict.fromkeys(r["target"] for r in rows):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        clean = t.get((target, "clean"), {}).get(0.0)
        for (tg, attack), curve in t.items():
            if tg != target or attack == "clean":
                continue
            eps = sorted(curve)
            ax.plot(eps, [curve[e] for e in eps], marker="o", ms=3, label=attack)
        if clean is not None:
            ax.axhline(clean, color="grey", ls="--", lw=1, label="clean")
        ax.axhline(chance, color="black", ls=":", lw=1, label="constant guess")
        ax.set_xscale("log")
        ax.set_xlabel("eps (L-inf, pixels in [0, 1])")
        ax.set_ylabel(f"test {spec.label}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{LABELS[target]}: {spec.label} under attack")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out / f"sweep_{target}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _plot_rounds(run_dir: Path, out: Path, spec: TaskSpec) -> Path | None:
    """Per-round (federated) or per-epoch (centralized) headline metric and loss of the global model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = RunDir(run_dir).metrics()
    rounds = [r for r in lines if "round" in r and "server" in r]
    if rounds:
        x = [r["round"] for r in rounds]
        acc = [r["server"].get(spec.headline) for r in rounds]
        loss = [r["server"].get("loss") for r in rounds]
        adv = [r["server"].get(f"fgsm_{spec.headline}") for r in rounds]
        xlabel, what = "round", "global model on test"
    else:
        epochs = [r for r in lines if "epoch" in r and "val" in r]
        if not epochs:
            return None
        x = [r["epoch"] for r in epochs]
        acc = [r["val"].get(spec.headline) for r in epochs]
        loss = [r["val"].get("loss") for r in epochs]
        adv = None
        xlabel, what = "epoch", "model on val"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    a1.plot(x, acc, marker="o", ms=3, label="clean")
    if adv and any(v is not None for v in adv):
        a1.plot(x, adv, marker="o", ms=3, label=f"FGSM eps {rounds[0]['server'].get('fgsm_eps', 0):g}")
    a1.set_xlabel(xlabel)
    a1.set_ylabel(spec.label)
    a1.set_title(f"{spec.label}, {what}")
    a1.legend(fontsize=8)
    a2.plot(x, loss, marker="o", ms=3, color="C3")
    a2.set_xlabel(xlabel)
    a2.set_ylabel("loss")
    a2.set_title(f"loss, {what}")
    fig.tight_layout()
    path = out / "rounds.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(cfg: ExperimentConfig, run_dir: Path, data: Split | None = None) -> Path:
    """report.md + plots/*.png from sweep.csv (and metrics.jsonl); returns the report path.
    ``data``: the swept images, when the caller has them loaded."""
    task = task_for(cfg)
    spec = task.spec
    rows = read_sweep(run_dir / SWEEP_CSV)
    data = data if data is not None else sweep_images(cfg)
    chance = task.chance(data)
    checks = run_checks(rows, chance, cfg.sweep.tolerance, spec.column, spec.label)
    head = headline(rows, spec)
    plots = run_dir / PLOTS
    plots.mkdir(exist_ok=True)
    figures = _plot_sweep(rows, plots, chance, spec)
    rounds = _plot_rounds(run_dir, plots, spec)
    eps = cfg.federation.eval_eps
    examples = task.pictures(lambda: load_model(cfg, run_dir / "model.pt"), data, eps, plots / "examples.png")
    summary = json.loads((run_dir / RunDir.SUMMARY).read_text()) if (run_dir / RunDir.SUMMARY).exists() else {}
    kind = summary.get("kind", "run")
    lines = [
        f"# Robustness report: {run_dir.name}", "",
        f"{kind} · {cfg.data.dataset} · {cfg.model.name}" +
        (f" · {cfg.partition.num_clients} clients ({cfg.partition.scheme}) · {cfg.federation.strategy}"
         if kind == "federated" else "") + f" · local augmentation {cfg.augment.mode}", "",
        f"{len(data)} test images (constant-guess {spec.label} {chance:.3f}); eps in pixel units on [0, 1] "
        "(× 255 = 8-bit grey levels); "
        f"PGD {cfg.sweep.pgd_steps} steps × {cfg.sweep.pgd_restarts} restart(s)"
        + (f"; APGD {cfg.sweep.apgd_steps} steps × {cfg.sweep.apgd_restarts} restart(s) (ART's; apgd-loss one start)"
           if any(a in cfg.sweep.attacks for a in (*APGD, "autoattack")) else "")
        + (f"; Square (ART) {cfg.sweep.square_queries} iterations"
           if any(a in cfg.sweep.attacks for a in ("square", "autoattack")) else "") + ". "
        "White-box attacks on ONNX targets are crafted on the torch student and scored by onnxruntime."
        + _not_run(cfg, rows), "",
        *_headline_table(rows, spec, head),
        "## Sanity checks", "",
        *[f"- {'✓' if c.ok else '✗ **VIOLATED**'} {c.name} — {LABELS.get(c.target, c.target)}: {c.detail}"
          for c in checks], "",
        f"## {spec.label[0].upper() + spec.label[1:]} by attack (rows: model × defense; columns: clean and each eps)",
        "",
    ]
    for attack in dict.fromkeys(r["attack"] for r in rows):
        if attack != "clean":
            lines += _table(rows, attack, cfg)
    if examples is not None:
        lines += ["## Examples", "", f"Test images with the global model's masks, clean and under FGSM at eps {eps:g} "
                  "(green: true polyp, red: predicted):", "", f"![examples]({PLOTS}/{examples.name})", ""]
    lines += _corruption_section(run_dir, rows, spec, plots)
    lines += poisoning_section(cfg, run_dir, plots, spec)
    lines += ["## Plots", "", *[f"![{p.stem}]({PLOTS}/{p.name})" for p in figures]]
    if rounds is not None:
        lines += [f"![rounds]({PLOTS}/{rounds.name})"]
    path = run_dir / REPORT
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(run_dir / "checks.json", json.dumps([c.__dict__ for c in checks], indent=1).encode())
    if summary:
        atomic_write_json(run_dir / RunDir.SUMMARY, {**summary, "robust": robust_summary(head, spec)})
    return path
