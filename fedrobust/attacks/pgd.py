"""Projected gradient descent (Madry et al. 2018), L-inf, with optional random start."""

from __future__ import annotations

import torch
from torch import nn

from fedrobust.attacks.gradient import Eps, Loss, eps_like, input_gradient, project


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Eps,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    loss: Loss = "ce",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``steps`` signed-gradient ascent steps of ``step_size`` (default 2.5 * eps / steps)."""
    x = x.detach()
    e = eps_like(eps, x)
    alpha = step_size if step_size else 2.5 * e / steps
    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
        x_adv = project(x + noise * e, x, eps)
    for _ in range(steps):
        grad = input_gradient(model, x_adv, y, loss)
        x_adv = project(x_adv + alpha * grad.sign(), x, eps)
    return x_adv
