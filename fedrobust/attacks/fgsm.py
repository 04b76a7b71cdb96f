"""FGSM (Goodfellow et al. 2015) and inverse FGSM (Pervin et al.): one signed-gradient step."""

from __future__ import annotations

import torch
from torch import nn

from fedrobust.attacks.gradient import Eps, Loss, eps_like, input_gradient


def signed_step(x: torch.Tensor, grad: torch.Tensor, eps: Eps, direction: float) -> torch.Tensor:
    """``x + direction * eps * sign(grad)`` clamped to [0, 1] (shared by attacks and fused training)."""
    return torch.clamp(x.detach() + direction * eps_like(eps, x) * grad.sign(), 0.0, 1.0)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, loss: Loss = "ce") -> torch.Tensor:
    """Loss-maximising step: ``x + eps * sign(grad_x L)``."""
    if isinstance(eps, float | int) and eps == 0:
        return x.detach().clone()
    return signed_step(x, input_gradient(model, x, y, loss), eps, +1.0)


def invfgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, loss: Loss = "ce") -> torch.Tensor:
    """Loss-minimising step ``x - eps * sign(grad_x L)``: the 'helpful' perturbation."""
    if isinstance(eps, float | int) and eps == 0:
        return x.detach().clone()
    return signed_step(x, input_gradient(model, x, y, loss), eps, -1.0)
