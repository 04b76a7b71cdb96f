"""``fedrobust report RUN_DIR...``: several runs' sweeps in one table and one plot, e.g. local
augmentation none / FGSM / inverse FGSM / both, or FedAvg vs FedMedian."""

from __future__ import annotations

from pathlib import Path

from fedrobust.checkpoint import run_config
from fedrobust.errors import FedrobustError
from fedrobust.report.single import defense_of
from fedrobust.rundir import atomic_write_bytes
from fedrobust.sweep.checks import score_table
from fedrobust.sweep.results import SWEEP_CSV, read_sweep
from fedrobust.sweep.targets import LABELS
from fedrobust.tasks.specs import SPECS


def run_label(run: Path) -> str:
    cfg = run_config(run)
    parts = [cfg.data.dataset, cfg.model.name, f"aug {cfg.augment.mode}"]
    if (run / "metrics.jsonl").exists() and cfg.federation.rounds and (run / "checkpoints").exists():
        parts.append(cfg.federation.strategy)
    return " · ".join(parts)


def compare(runs: list[Path], attack: str, target: str, out: Path) -> Path:
    """Write ``out`` (markdown) and ``out``.png: accuracy vs eps of ``target`` under ``attack``."""
    curves: list[tuple[str, str, float, dict[float, float]]] = []
    specs = []
    for run in runs:
        if not (run / SWEEP_CSV).is_file():
            raise FedrobustError(f"{run} has no {SWEEP_CSV}; run `fedrobust sweep {run}` first")
        spec = SPECS[run_config(run).data.task]
        specs.append(spec)
        if spec.name != specs[0].name:
            raise FedrobustError(f"{run} is a {spec.name} run but {runs[0]} is {specs[0].name}; compare runs of "
                                 f"one task")
        t = score_table(read_sweep(run / SWEEP_CSV), spec.column)
        if (target, attack) not in t:
            have = sorted({f"{k[0]}/{k[1]}" for k in t if k[1] != "clean"})
            raise FedrobustError(f"{run}: no {target}/{attack} cells in {SWEEP_CSV} (it has {', '.join(have[:6])}"
                                 f"{'...' if len(have) > 6 else ''}); pick --target/--attack or re-sweep")
        clean = t.get((target, "clean"), {}).get(0.0, float("nan"))
        curves.append((run_label(run), defense_of(run_config(run), target), clean, t[(target, attack)]))
    eps = sorted({e for *_, c in curves for e in c})
    label = specs[0].label
    lines = [f"# {LABELS[target]} under {attack} ({label})", "",
             "| run | defense | clean | " + " | ".join(f"{e:.4g}" for e in eps) + " |",
             "|" + " --- |" * (3 + len(eps))]
    for (label, defense, clean, c), run in zip(curves, runs, strict=True):
        cells = " | ".join(f"{c[e]:.3f}" if e in c else "-" for e in eps)
        lines.append(f"| {label} (`{run.name}`) | {defense} | {clean:.3f} | {cells} |")
    png = out.with_suffix(".png")
    if out.parent.exists() and not out.parent.is_dir():
        raise FedrobustError(f"--out {out}: {out.parent} is a file, not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)  # --out into a folder that does not exist yet
    _plot(curves, attack, target, png, label)
    lines += ["", f"![comparison]({png.name})", ""]
    atomic_write_bytes(out, "\n".join(lines).encode())
    return out


def _plot(curves: list, attack: str, target: str, path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    for label, _, clean, c in curves:
        eps = sorted(c)
        (line,) = ax.plot(eps, [c[e] for e in eps], marker="o", ms=3, label=label)
        ax.axhline(clean, color=line.get_color(), ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("eps (L-inf, pixels in [0, 1]); dotted: clean")
    ax.set_ylabel(f"test {label}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{LABELS[target]} under {attack}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
