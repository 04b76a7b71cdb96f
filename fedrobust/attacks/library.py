"""Evaluation attacks from a maintained library: the adversarial-robustness-toolbox (ART 1.20).

fedrobust's own FGSM / PGD / inverse FGSM (``fgsm.py``, ``pgd.py``) serve training (fused mode reuses
the clean backward pass); what a report's robust accuracy is judged by comes from ART, the
parameter-free ensemble of AutoAttack (Croce & Hein 2020):

- APGD-CE: auto-step-size PGD on cross-entropy, with restarts;
- APGD-DLR: the same on the difference-of-logits ratio, which needs >= 3 classes; on a binary head
  AutoAttack's own checks prescribe a margin loss instead, so ``apgd(..., loss="margin")`` runs
  ART's APGD on :func:`~fedrobust.attacks.gradient.margin_loss`;
- Square: score-based black box that only queries ``predict`` (here an onnxruntime session or torch).

All take and return float32 (N, C, H, W) tensors in [0, 1] with integer class labels; a one-logit head
is presented to ART as the two logits (0, z), which have the same softmax.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from fedrobust.attacks.gradient import frozen, margin_loss
from fedrobust.device import device_of

Predict = Callable[[np.ndarray], np.ndarray]  # (N, C, H, W) float32 -> (N, classes) scores


class _TwoLogits(nn.Module):
    """(N, 1) logit z -> (N, 2) logits (0, z): ART's attacks refuse single-output classifiers."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.cat([torch.zeros_like(z), z], dim=1) if z.shape[1] == 1 else z


class _MarginLoss(nn.modules.loss._Loss):
    """Margin loss as a torch loss module with a settable ``reduction`` (what ART's estimator expects)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = target.argmax(1) if target.ndim == 2 else target.long()
        return margin_loss(logits, y, reduction=self.reduction)


def _classes(scores: np.ndarray) -> int:
    return max(2, int(scores.shape[1]))


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """ART draws restarts and squares from numpy's global generator: seed it, then put it back."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


@contextlib.contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Eval mode, and parameter gradients as they were: ART's estimator backpropagates into ``param.grad``."""
    grads = [p.grad for p in model.parameters()]
    with frozen(model):
        try:
            yield
        finally:
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g


def _estimator(model: nn.Module, x: torch.Tensor, loss: nn.Module | None = None):
    from art.estimators.classification import PyTorchClassifier

    wrapped = _TwoLogits(model).eval()
    device = device_of(model)
    with torch.no_grad():
        classes = _classes(wrapped(x[:1].to(device)).cpu().numpy())
    return PyTorchClassifier(model=wrapped, loss=loss or nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=classes, clip_values=(0.0, 1.0),
                             device_type="gpu" if device.type == "cuda" else "cpu")


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, loss: str = "ce", steps: int = 100,
         restarts: int = 1, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """ART's APGD (L-inf) on ``loss``: "ce", "dlr" (>= 3 classes) or "margin"; restarts only for images
    still classified correctly. Returns ``x_adv`` with ``|x_adv - x|_inf <= eps``."""
    from art.attacks.evasion import AutoProjectedGradientDescent

    if eps <= 0:
        return x.detach().clone()
    kinds = {"ce": "cross_entropy", "dlr": "difference_logits_ratio", "margin": None}
    if loss not in kinds:
        raise ValueError(f"apgd loss {loss!r}: use one of {', '.join(kinds)}")
    with _untouched(model):
        estimator = _estimator(model, x, _MarginLoss() if loss == "margin" else None)
        if loss == "dlr" and estimator.nb_classes < 3:
            raise ValueError("APGD-DLR needs >= 3 classes; use loss='margin' on a binary head")
        attack = AutoProjectedGradientDescent(estimator, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps,
                                              nb_random_init=restarts, batch_size=batch_size,
                                              loss_type=kinds[loss], verbose=False)
        with _seeded(seed):
            x_adv = attack.generate(x.numpy().astype(np.float32), y.numpy())
    return _clip(torch.from_numpy(x_adv), x, eps)


def square(predict: Predict, x: torch.Tensor, y: torch.Tensor, eps: float, *, queries: int, seed: int = 0,
           batch_size: int = 256) -> tuple[torch.Tensor, float]:
    """ART's Square attack with ``queries`` iterations (one query per image each); it queries ``predict``
    alone, never gradients. Returns ``x_adv`` and the mean number of queries per image."""
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification.blackbox import BlackBoxClassifierNeuralNetwork

    if eps <= 0:
        return x.detach().clone(), 0.0
    asked = [0]

    def counted(a: np.ndarray) -> np.ndarray:
        asked[0] += len(a)
        scores = np.asarray(predict(np.ascontiguousarray(a, dtype=np.float32)), dtype=np.float32)
        return np.concatenate([np.zeros_like(scores), scores], 1) if scores.shape[1] == 1 else scores

    classes = _classes(counted(x[:1].numpy()))
    asked[0] = 0
    estimator = BlackBoxClassifierNeuralNetwork(counted, tuple(x.shape[1:]), classes, clip_values=(0.0, 1.0))
    attack = SquareAttack(estimator, norm=np.inf, eps=eps, max_iter=queries, p_init=0.8, nb_restarts=1,
                          batch_size=batch_size, verbose=False)
    with _seeded(seed):
        x_adv = attack.generate(x.numpy().astype(np.float32), np.eye(classes, dtype=np.float32)[y.numpy()])
    return _clip(torch.from_numpy(x_adv), x, eps), asked[0] / max(len(x), 1)


def _clip(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """ART projects in float32 numpy; clip once more so the L-inf bound holds exactly in torch."""
    return torch.clamp(torch.minimum(torch.maximum(x_adv.to(x.dtype), x - eps), x + eps), 0.0, 1.0)
