"""The one primitive every gradient attack needs: d loss / d input, without side effects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from fedrobust.device import device_of

Eps = float | torch.Tensor


def classification_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean",
                        class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy for C-logit heads; binary cross-entropy for a single-logit head.

    ``class_weight`` (one weight per class) scales each sample's loss by its class's weight.
    """
    if class_weight is not None:
        per_sample = classification_loss(logits, y, reduction="none") * class_weight[y]
        return per_sample.sum() if reduction == "sum" else per_sample.mean() if reduction == "mean" else per_sample
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1), y.float(), reduction=reduction)
    return F.cross_entropy(logits, y, reduction=reduction)


def margin_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """CW-style margin: best wrong logit minus true logit (no softmax, so no saturation)."""
    if logits.shape[-1] == 1:
        z = logits.squeeze(-1)
        out = torch.where(y.bool(), -z, z)
    else:
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(y, logits.shape[-1]).bool(), float("-inf")).amax(1)
        out = other - true
    return out.mean() if reduction == "mean" else out.sum() if reduction == "sum" else out


LOSSES = {"ce": classification_loss, "margin": margin_loss}
LossFn = Callable[..., torch.Tensor]  # (logits, targets, reduction=...) -> loss
Loss = str | LossFn  # a name in LOSSES (the classification defaults) or a task's own loss


def loss_fn(loss: Loss) -> LossFn:
    return LOSSES[loss] if isinstance(loss, str) else loss


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration (BatchNorm statistics are read, never updated)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss = "ce") -> torch.Tensor:
    """Gradient of the summed loss w.r.t. ``x`` only, computed on the model's device and returned on ``x``'s;
    ``param.grad`` stays as it was."""
    device = device_of(model)
    xd = x.detach().to(device).requires_grad_(True)
    with frozen(model), torch.enable_grad():
        value = loss_fn(loss)(model(xd), y.to(device), reduction="sum")
        (grad,) = torch.autograd.grad(value, xd)
    return grad.to(x.device)


def eps_like(eps: Eps, x: torch.Tensor) -> torch.Tensor | float:
    """Broadcastable eps: a float stays a float; a per-sample (N,) tensor becomes N x 1 x 1 x 1."""
    if isinstance(eps, torch.Tensor):
        return eps.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return float(eps)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: Eps) -> torch.Tensor:
    """Back into the L-inf ball of radius eps around x, and into [0, 1]."""
    e = eps_like(eps, x)
    return torch.clamp(torch.minimum(torch.maximum(x_adv, x - e), x + e), 0.0, 1.0)
