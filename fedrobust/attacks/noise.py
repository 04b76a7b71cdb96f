"""Random-noise baselines: an attack that does no better than these has found nothing."""

from __future__ import annotations

import torch

from fedrobust.attacks.gradient import Eps, eps_like


def uniform_noise(x: torch.Tensor, eps: Eps, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x + U(-eps, eps)`` clipped to [0, 1]: random inside the L-inf ball."""
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) * 2 - 1  # CPU generator
    return torch.clamp(x.detach() + noise * eps_like(eps, x), 0.0, 1.0)


def sign_noise(x: torch.Tensor, eps: Eps, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x + eps * (random +-1)`` clipped to [0, 1]: FGSM's L-inf magnitude in a random direction."""
    signs = torch.randint(0, 2, x.shape, generator=generator).to(x.device, x.dtype) * 2 - 1  # CPU generator
    return torch.clamp(x.detach() + signs * eps_like(eps, x), 0.0, 1.0)
