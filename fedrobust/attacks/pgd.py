"""Projected gradient descent (Madry et al. 2018), L-inf, with optional random start."""

from __future__ import annotations

import torch
from torch import nn

from fedrobust.attacks.gradient import Eps, Loss, eps_like, input_gradient, project
from fedrobust.device import device_of


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
    """``steps`` signed-gradient ascent steps of ``step_size`` (default 2.5 * eps / steps), on the model's
    device; returned on ``x``'s."""
    home, device = x.device, device_of(model)
    x, y = x.detach().to(device), y.to(device)
    e = eps_like(eps, x)
    alpha = step_size if step_size else 2.5 * e / steps
    x_adv = x.clone()
    if random_start:  # drawn on the CPU generator: the same start on every device
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(device) * 2 - 1
        x_adv = project(x + noise * e, x, eps)
    for _ in range(steps):
        grad = input_gradient(model, x_adv, y, loss)
        x_adv = project(x_adv + alpha * grad.sign(), x, eps)
    return x_adv.to(home)
