"""The report's poisoning section: per round, who attacked, what the aggregator dropped, how well that matched,
and what the updates looked like (metrics.jsonl ``malicious``, ``updates``, ``defense`` / ``selected``,
``detection``), as a table and a plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from fedrobust.config import ExperimentConfig
from fedrobust.rundir import RunDir
from fedrobust.tasks.specs import TaskSpec


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _split(updates: dict[str, dict[str, float]], malicious: list[int], key: str) -> tuple[list[float], list[float]]:
    bad = {str(p) for p in malicious}
    honest = [u[key] for p, u in updates.items() if p not in bad and u[key] == u[key]]
    evil = [u[key] for p, u in updates.items() if p in bad and u[key] == u[key]]
    return honest, evil


def _dropped(r: dict[str, Any]) -> list[int] | None:
    if "defense" in r:
        return r["defense"].get("flagged", [])
    if "selected" in r:
        return sorted({int(p) for p in r.get("updates", {})} - set(r["selected"]))
    return None


def poisoning_section(cfg: ExperimentConfig, run_dir: Path, plots: Path, spec: TaskSpec) -> list[str]:
    """Markdown lines (empty when the run had no adversary)."""
    rounds = [r for r in RunDir(run_dir).metrics() if r.get("round", 0) >= 1 and "malicious" in r]
    if not rounds:
        return []
    a = cfg.adversary
    backdoor = any("backdoor_asr" in r.get("server", {}) for r in rounds)
    lines = [f"## Poisoning: {a.kind} from round {a.start_round} against {cfg.federation.strategy}", "",
             "Threat model: poisoning at training time; the malicious hospitals "
             + ("are simulated by the server from the round's honest updates (colluding, omniscient)"
                if a.kind in ("alie", "ipm") else "run their own ClientApp")
             + ". Norms are of the update (sent − global weights); cos is to the honest clients' mean update. "
             "Dropped: what the defense excluded or clipped (FLTrust: trust 0; Krum family: not selected).", "",
             f"| round | malicious | dropped | precision | recall | honest norm (median) | malicious norm | "
             f"malicious cos | test {spec.short} | FGSM {spec.short} |" + (" backdoor ASR |" if backdoor else ""),
             "|" + " --- |" * (10 + backdoor)]
    for r in rounds:
        upd = r.get("updates", {})
        hn, en = _split(upd, r["malicious"], "norm")
        _, ec = _split(upd, r["malicious"], "cos_honest")
        det = r.get("detection", {})
        dropped = _dropped(r)
        s = r.get("server", {})
        lines.append(
            f"| {r['round']} | {r['malicious'] or '–'} | {'n/a' if dropped is None else dropped or '–'} | "
            f"{_fmt(det.get('precision'))} | {_fmt(det.get('recall'))} | "
            f"{_fmt(statistics.median(hn) if hn else None)} | {_fmt(statistics.mean(en) if en else None)} | "
            f"{_fmt(statistics.mean(ec) if ec else None)} | {_fmt(s.get(spec.headline))} | "
            f"{_fmt(s.get('fgsm_' + spec.headline))} |" + (f" {_fmt(s.get('backdoor_asr'))} |" if backdoor else ""))
    figure = _plot(rounds, plots, spec, backdoor)
    return [*lines, "", f"![poisoning]({plots.name}/{figure.name})", ""]


def _plot(rounds: list[dict[str, Any]], plots: Path, spec: TaskSpec, backdoor: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["round"] for r in rounds]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(12, 3.4))
    a1.plot(x, [r.get("server", {}).get(spec.headline) for r in rounds], marker="o", ms=3, label=f"test {spec.short}")
    if backdoor:
        a1.plot(x, [r["server"].get("backdoor_asr") for r in rounds], marker="s", ms=3, color="C3",
                label="backdoor success")
    a1.set_title("global model")
    a1.set_xlabel("round")
    a1.legend(fontsize=8)
    for ax, key, title in ((a2, "norm", "update norm"), (a3, "cos_honest", "cos to honest mean")):
        for who, colour, pick in (("honest", "C0", 0), ("malicious", "C3", 1)):
            values = [_split(r.get("updates", {}), r["malicious"], key)[pick] for r in rounds]
            xs = [xi for xi, v in zip(x, values, strict=True) for _ in v]
            ax.scatter(xs, [u for v in values for u in v], s=10, color=colour, label=who)
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.legend(fontsize=8)
    a2.set_yscale("log")
    fig.tight_layout()
    path = plots / "poisoning.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
