"""One sweep cell = (target, attack, eps): craft adversarial inputs, score them on the target.

Attack names (``sweep.attacks``):
  fgsm, pgd               white-box on the target's torch weights, the task's loss on logits (T = 1):
                          cross-entropy for classes, Dice + BCE for masks
  fgsm-margin, pgd-margin the same with a CW-style margin loss: no softmax, so a saturated
                          (e.g. temperature-distilled) output cannot hide the gradient
  transfer-fgsm/-pgd      crafted on the torch global model (teacher), scored on the target
  apgd-ce, apgd-dlr       ART's APGD (100 steps by default) on cross-entropy / the difference-of-logits
                          ratio (>= 3 classes); apgd-margin on the margin loss, for binary heads
  apgd-loss               APGD's step-size schedule on the task's own per-image loss (masks: Dice + BCE),
                          where ART has no APGD
  square                  ART's score-based black box (Square attack) querying only the onnxruntime session
  autoattack              per image, the worst case over the task's ensemble (classes: FGSM, PGD, APGD-CE,
                          APGD-DLR or margin APGD on binary heads, Square; masks: FGSM, PGD, apgd-loss); FGSM,
                          PGD and APGD-CE on every image (the same images as their own cells), the rest on the
                          images still scoring above 0 (AutoAttack's order): the headline robust score
  noise                   random ±eps per pixel: what any attack must beat
  invfgsm                 the loss-*minimising* step (Pervin et al.'s helpful perturbation)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedrobust.attacks import input_gradient, pgd, sign_noise
from fedrobust.attacks.apgd_schedule import apgd_schedule
from fedrobust.attacks.fgsm import signed_step
from fedrobust.attacks.gradient import Loss
from fedrobust.attacks.library import apgd, square
from fedrobust.config import SweepSection
from fedrobust.sweep.targets import Target
from fedrobust.tasks.base import Task

WHITE_BOX = ("fgsm", "pgd", "fgsm-margin", "pgd-margin")
TRANSFER = ("transfer-fgsm", "transfer-pgd")
APGD = ("apgd-ce", "apgd-dlr", "apgd-margin", "apgd-loss")
ENSEMBLE = (*APGD, "square")  # the attacks of autoattack's ensembles besides the sweep's FGSM and PGD
# the sweep's white-box attacks join autoattack's ensemble: on a target reached through another model's gradients
# (an ONNX student, quantized) a one-step FGSM can beat APGD, and a worst case must not be weaker than any of them
SHARED = ("fgsm", "pgd", "apgd-ce", "apgd-loss")  # run on every image, their cells' images reused
MEMOIZED = (*ENSEMBLE, "pgd")
MARGIN_TWINS = {"fgsm-margin": "fgsm", "pgd-margin": "pgd"}
Crafted = tuple[torch.Tensor, dict[str, float]]


@dataclass(frozen=True)
class Cell:
    target: str
    attack: str
    eps: float

    @property
    def key(self) -> tuple[str, str, str]:
        return self.target, self.attack, f"{self.eps:.6g}"

    def seed(self, base: int) -> int:
        """A per-cell seed: a resumed sweep redoes a cell exactly as an uninterrupted one would."""
        digest = hashlib.sha256(f"{base}|{self.target}|{self.attack}|{self.eps:.6g}".encode()).digest()
        return int.from_bytes(digest[:4], "little")


def crafted_on(cell: Cell, w: SweepSection) -> tuple[str, str, str]:
    """What an attack's images depend on, besides eps. Cells that share it share the images:
    the ONNX students are attacked with exactly the inputs crafted on the torch student, transfer
    inputs are the same for every student, and the noise is the same for every model."""
    if cell.attack in TRANSFER:
        source = "teacher"
    elif cell.attack == "noise":
        source = "any"
    elif cell.attack in ("square", "autoattack") or (cell.attack.startswith("pgd") and w.pgd_restarts > 1):
        source = cell.target  # queries (or restart selection) go through the target's own runtime
    else:
        source = "global" if cell.target == "global" else "student"
    return source, cell.attack, f"{cell.eps:.6g}"


def applies(attack: str, target: str) -> bool:
    """Transfer from the global model onto itself is just white-box; Square is the attacker who can
    only query the deployed edge model, so it runs against the onnxruntime targets."""
    if attack in TRANSFER:
        return target != "global"
    if attack == "square":
        return target.startswith("onnx")
    return True


def redundant(attacks: list[str], classes: int, saturated: bool) -> dict[str, str]:
    """Margin variants a two-class head makes equal to their cross-entropy twins (also in ``attacks``), which
    the sweep then skips. With two logits the cross-entropy is softplus(-m) of the margin m, a monotone
    function, so the input gradients have the same sign and FGSM-margin is FGSM exactly (PGD-margin is PGD
    with another random start). Not when ``saturated``: an image whose cross-entropy gradient underflowed to
    zero in float32 is where the margin loss sees more."""
    if classes != 2 or saturated:
        return {}
    return {a: twin for a, twin in MARGIN_TWINS.items() if a in attacks and twin in attacks}


def _batched(fn, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _pgd_worst_case(source: nn.Module, target: Target, x: torch.Tensor, y: torch.Tensor, eps: float,
                    w: SweepSection, loss: Loss, generator: torch.Generator, task: Task) -> torch.Tensor:
    """PGD with restarts; per image, the restart that scores worst on the *target's runtime* is kept (the first
    one that fools a classifier; the lowest IoU of a mask)."""
    best, worst = None, np.full(len(y), np.inf)
    for _ in range(w.pgd_restarts):
        x_adv = _batched(lambda xb, yb: pgd(source, xb, yb, eps, steps=w.pgd_steps, loss=loss,
                                            generator=generator), x, y)
        best, worst = _keep_worse(best, worst, x_adv, task.per_sample(target.logits(x_adv), y))
        if bool((worst <= 0).all()):
            break
    assert best is not None
    return best


def _keep_worse(best: torch.Tensor | None, worst: np.ndarray, x_adv: torch.Tensor,
                scores: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Per image, ``x_adv`` where it scores lower than the worst so far (the earlier one on ties)."""
    if best is None:
        return x_adv.clone(), scores
    take = torch.from_numpy(scores < worst)
    best[take] = x_adv[take]
    return best, np.minimum(worst, scores)


# one-step attacks: (direction, margin loss?, on the teacher?); their input gradient does not depend on eps
ONE_STEP = {"fgsm": (1.0, False, False), "fgsm-margin": (1.0, True, False), "invfgsm": (-1.0, False, False),
            "transfer-fgsm": (1.0, False, True)}


def craft(cell: Cell, target: Target, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, w: SweepSection,
          seed: int, task: Task, memo: dict[tuple, Crafted] | None = None) -> Crafted:
    """Adversarial (or baseline) images for one cell, plus extra facts (e.g. mean queries). ``memo`` keeps the
    images of APGD and Square cells by :func:`crafted_on`, so autoattack starts from APGD-CE's own cell, and the
    input gradient of each model and loss, which every eps of FGSM, inverse FGSM and transfer FGSM shares."""
    memo = {} if memo is None else memo
    if cell.attack in ONE_STEP:
        direction, margin, on_teacher = ONE_STEP[cell.attack]
        model = teacher if on_teacher else target.source
        key = ("gradient", id(model), margin)
        if key not in memo:
            loss = task.margin if margin else task.loss
            memo[key] = (_batched(lambda xb, yb: input_gradient(model, xb, yb, loss), x, y), {})
        return signed_step(x, memo[key][0], cell.eps, direction), {}
    if cell.attack in MEMOIZED and crafted_on(cell, w) in memo:
        return memo[crafted_on(cell, w)]
    if cell.attack == "autoattack":
        return _autoattack(cell, target, teacher, x, y, w, seed, task, memo)
    out = _craft_one(cell, target, teacher, x, y, w, seed, task)
    if cell.attack in MEMOIZED:
        memo[crafted_on(cell, w)] = out
    return out


def _autoattack(cell: Cell, target: Target, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, w: SweepSection,
                seed: int, task: Task, memo: dict[tuple[str, str, str], Crafted]) -> Crafted:
    """FGSM, PGD and APGD-CE on every image (their own cells' images), then each further attack only on the
    images whose score on the target's runtime is still above 0; per image the lowest score counts (a
    misclassified image stays so; a mask keeps its lowest IoU)."""
    best = x.clone()
    worst = task.per_sample(target.logits(x), y)
    queries = 0.0
    for name in task.worst_case(target.logits(x[:1]).shape[1]):
        idx = np.flatnonzero(worst > 0)
        if not len(idx):
            break
        part = Cell(cell.target, name, cell.eps)
        if name in SHARED:
            whole, extra = craft(part, target, teacher, x, y, w, seed, task, memo)
            x_adv = whole[idx]
        else:
            x_adv, extra = _craft_one(part, target, teacher, x[idx], y[idx], w, seed, task)
        scores = task.per_sample(target.logits(x_adv), y[idx])
        lower = scores < worst[idx]
        best[idx[lower]] = x_adv[lower]
        worst[idx[lower]] = scores[lower]
        queries += extra.get("mean_queries", 0.0) * len(idx) / len(x)
    return best, {"mean_queries": queries}


def _craft_one(cell: Cell, target: Target, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, w: SweepSection,
               seed: int, task: Task) -> Crafted:
    eps, attack, ce = cell.eps, cell.attack, task.loss
    source_key = crafted_on(cell, w)[0]
    seed = Cell(source_key, cell.attack, cell.eps).seed(seed)  # shared images, shared randomness
    generator = torch.Generator().manual_seed(seed)
    source = target.source
    extra: dict[str, float] = {}
    if attack in ("pgd", "pgd-margin"):
        loss = task.margin if attack == "pgd-margin" else ce
        return _pgd_worst_case(source, target, x, y, eps, w, loss, generator, task), extra
    if attack == "transfer-pgd":
        return _batched(lambda xb, yb: pgd(teacher, xb, yb, eps, steps=w.pgd_steps, loss=ce, generator=generator),
                        x, y), extra
    if attack == "apgd-loss":
        return _batched(lambda xb, yb: apgd_schedule(source, xb, yb, eps, loss=ce, steps=w.apgd_steps,
                                                     generator=generator), x, y), extra
    if attack in APGD:
        return apgd(source, x, y, eps, loss=attack.removeprefix("apgd-"), steps=w.apgd_steps,
                    restarts=w.apgd_restarts, seed=seed), extra
    if attack == "square":
        x_adv, extra["mean_queries"] = square(lambda a: target.logits(torch.from_numpy(a)), x, y, eps,
                                              queries=w.square_queries, seed=seed)
        return x_adv, extra
    if attack == "noise":
        return sign_noise(x, eps, generator=generator), extra
    raise ValueError(f"unknown attack {attack!r}")
