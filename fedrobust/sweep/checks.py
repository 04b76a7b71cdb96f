"""Sanity checks that keep robustness numbers honest (gradient masking cannot fake them).

- PGD is at least as strong as FGSM (same loss); APGD-CE at least as strong as PGD, within one image;
- the worst case (autoattack) is at least as strong as every single attack;
- transfer, black-box and random noise are not stronger than the best white-box attack;
- the score (accuracy, or polyp IoU for masks) falls as eps grows, toward chance at the largest eps; once it
  is at or below chance, a rise that stays there is no violation (a fully successful attack can land anywhere
  under the constant guess: a mask head driven to all-background scores 0, to all-polyp the floor);
- the ONNX fp32 model predicts exactly what its torch source predicts on clean images.
Each check has a tolerance (``sweep.tolerance``) for the randomness of PGD starts and Square.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from fedrobust.sweep.cells import APGD, TRANSFER, WHITE_BOX

LARGE_EPS = 8 / 255  # from here on, white-box accuracy of a 28 px MedMNIST model should be at chance or below


@dataclass(frozen=True)
class Check:
    name: str
    target: str
    ok: bool
    detail: str


def score_table(rows: list[dict], column: str) -> dict[tuple[str, str], dict[float, float]]:
    """{(target, attack): {eps: the ``column`` score (e.g. accuracy)}}; rows without the column (a sweep.csv
    written before it existed) are left out."""
    table: dict[tuple[str, str], dict[float, float]] = {}
    for r in rows:
        if column not in r:
            continue
        table.setdefault((r["target"], r["attack"]), {})[r["eps"]] = r[column]
    return table


STRONGEST = (*WHITE_BOX, *APGD, "autoattack")  # the attacks whose per-eps minimum is the white-box worst case


def strongest(t: dict[tuple[str, str], dict[float, float]], target: str) -> dict[float, float]:
    """Per eps, the lowest score any white-box attack (FGSM, PGD, APGD, autoattack) reached on ``target``."""
    curves = [t[(target, a)] for a in STRONGEST if (target, a) in t]
    return {e: min(c[e] for c in curves if e in c) for e in curves[0]} if curves else {}


def run_checks(rows: list[dict], chance: float, tol: float, column: str, label: str) -> list[Check]:
    """``chance``: the ``column`` score of a constant guess (the majority-class share for accuracy); ``label``
    names the score in the checks' wording."""
    t = score_table(rows, column)
    targets = list(dict.fromkeys(r["target"] for r in rows))
    one_image = 1 / max(float(rows[0].get("n") or 1), 1.0) if rows else 0.0
    checks: list[Check] = []
    for target in targets:
        a, p = t.get((target, "apgd-ce")), t.get((target, "pgd"))
        if a and p:
            bad = [e for e in a if e in p and a[e] > p[e] + one_image + 1e-9]
            checks.append(Check("APGD-CE ≤ PGD (one image)", target, not bad,
                                "holds at every eps" if not bad else
                                "violated at eps " + ", ".join(f"{e:g} ({a[e]:.3f} > {p[e]:.3f})" for e in bad)))
        worst = t.get((target, "autoattack"))
        if worst:
            skip = ("clean", "autoattack", "invfgsm")  # invfgsm helps the model: no attack
            others = [(k[1], v) for k, v in t.items() if k[0] == target and k[1] not in skip]
            bad = [(name, e) for name, v in others for e in v if e in worst and worst[e] > v[e] + tol]
            checks.append(Check("worst case ≤ every attack", target, not bad,
                                f"holds against {len(others)} attacks at every eps" if not bad else
                                "violated by " + ", ".join(f"{n} at {e:g}" for n, e in bad)))
        for loss in ("", "-margin"):
            f, p = t.get((target, f"fgsm{loss}")), t.get((target, f"pgd{loss}"))
            if f and p:
                bad = [e for e in p if e in f and p[e] > f[e] + tol]
                checks.append(Check(f"PGD{loss} ≤ FGSM{loss}", target, not bad,
                                    "holds at every eps" if not bad else
                                    "violated at eps " + ", ".join(f"{e:g} ({p[e]:.3f} > {f[e]:.3f})" for e in bad)))
        best = strongest(t, target)
        if best:
            for attack in (*TRANSFER, "square", "noise"):
                a = t.get((target, attack))
                if not a:
                    continue
                bad = [e for e in a if e in best and a[e] < best[e] - tol]
                checks.append(Check(f"{attack} ≥ best white-box", target, not bad,
                                    "holds at every eps" if not bad else
                                    "violated at eps " + ", ".join(f"{e:g} ({a[e]:.3f} < {best[e]:.3f})"
                                                                   for e in bad)))
            eps = sorted(best)
            drops = [(a, b) for a, b in itertools.pairwise(eps) if best[b] > max(best[a], chance) + tol]
            checks.append(Check(f"{label} falls as eps grows", target, not drops,
                                "monotone above chance (best white-box)" if not drops else
                                "rises from " + ", ".join(f"{a:g}→{b:g}" for a, b in drops)))
            top = eps[-1]
            if top >= LARGE_EPS:  # small grids (e.g. 0.001..0.005) need not reach chance
                checks.append(Check("toward chance at the largest eps", target, best[top] <= chance + tol,
                                    f"{best[top]:.3f} at eps {top:g} (constant guess {chance:.3f})"))
    clean = {k[0]: v.get(0.0) for k, v in t.items() if k[1] == "clean"}
    if "onnx_fp32" in clean and "student" in clean:
        same = abs(clean["onnx_fp32"] - clean["student"]) < 1e-9
        checks.append(Check("clean ONNX fp32 = torch", "onnx_fp32", same,
                            f"{clean['onnx_fp32']:.4f} vs {clean['student']:.4f}"))
    return checks
