"""APGD's step-size schedule (Croce & Hein 2020, Algorithm 1) on any per-image loss, L-inf.

ART's APGD takes classifiers only; a segmenter's loss is a per-image Dice + BCE over a mask. This is the
same algorithm on the task's own loss: step 2*eps, momentum 0.75, and at checkpoints (22 %, then ever
closer) each image halves its step and restarts from its best point when fewer than 75 % of its steps
since the last checkpoint raised the loss, or when neither its step nor its best loss changed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedrobust.attacks.gradient import Loss, frozen, loss_fn, project
from fedrobust.device import device_of


def checkpoints(steps: int) -> set[int]:
    """The iterations after which step sizes are reconsidered: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), as fractions of ``steps``."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return {math.ceil(q * steps - 1e-9) for q in p[1:]}


def apgd_schedule(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, loss: Loss = "ce",
                  steps: int = 100, rho: float = 0.75, momentum: float = 0.75,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The point of highest ``loss`` (called with ``reduction="none"``: one value per image) found in
    ``steps`` iterations from a random start; on the model's device, returned on ``x``'s."""
    if eps <= 0:
        return x.detach().clone()
    home, device = x.device, device_of(model)
    x, y = x.detach().to(device), y.to(device)
    fn = loss_fn(loss)
    per_image = (len(x),) + (1,) * (x.ndim - 1)

    def value_and_grad(xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xa = xa.detach().requires_grad_(True)
        with frozen(model), torch.enable_grad():
            value = fn(model(xa), y, reduction="none")
            (grad,) = torch.autograd.grad(value.sum(), xa)
        return value.detach(), grad

    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(device) * 2 - 1
    x_cur = project(x + noise * eps, x, eps)
    f_cur, grad = value_and_grad(x_cur)
    best_x, best_f = x_cur.clone(), f_cur.clone()
    x_prev = x_cur.clone()
    step = torch.full(per_image, 2.0 * eps, device=device)
    rises = torch.zeros(len(x), device=device)
    halved = torch.zeros(len(x), dtype=torch.bool, device=device)
    best_at_check, last_check = best_f.clone(), 0
    marks = checkpoints(steps)
    for k in range(steps):
        z = project(x_cur + step * grad.sign(), x, eps)
        a = 1.0 if k == 0 else momentum
        x_new = project(x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), x, eps)
        f_new, grad = value_and_grad(x_new)
        rises += (f_new > f_cur).float()
        better = f_new > best_f
        best_x[better], best_f[better] = x_new[better], f_new[better]
        x_prev, x_cur, f_cur = x_cur, x_new, f_new
        if k + 1 in marks and k + 1 < steps:
            stalled = (rises < rho * (k + 1 - last_check)) | (~halved & (best_f <= best_at_check))
            if bool(stalled.any()):
                step[stalled] /= 2
                x_cur[stalled] = best_x[stalled]
                x_prev[stalled] = best_x[stalled]
                f_cur, grad = value_and_grad(x_cur)
            halved, rises, best_at_check, last_check = stalled, torch.zeros_like(rises), best_f.clone(), k + 1
    return best_x.to(home)
