"""Adversarial augmentation policy for local training (Pervin et al.'s FGSM / inverse FGSM).

A policy decides, per batch, which samples are augmented, with which eps (fixed, or drawn per
sample from (0, eps] as the reference paper's 0 < sigma <= eps), by which attack, and whether the
adversarial copies are appended to the clean batch or replace the clean samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedrobust.attacks import fgsm, invfgsm, pgd
from fedrobust.attacks.fgsm import signed_step
from fedrobust.attacks.gradient import Loss
from fedrobust.config import AugmentSection

_DIRECTIONS = {"fgsm": (+1.0,), "invfgsm": (-1.0,), "both": (+1.0, -1.0)}


@dataclass
class AugmentedBatch:
    """What to train on: images, labels, and how many of them are adversarial."""

    x: torch.Tensor
    y: torch.Tensor
    n_adv: int


class AdversarialPolicy:
    """Builds the adversarial part of each training batch from an ``[augment]`` section; ``loss`` is the one the
    attacks differentiate (the task's training loss)."""

    def __init__(self, cfg: AugmentSection, generator: torch.Generator | None = None, loss: Loss = "ce") -> None:
        self.cfg = cfg
        self.generator = generator or torch.Generator().manual_seed(0)
        self.loss = loss

    def active(self, epoch: int) -> bool:
        """Augment from epoch ``warmup_epochs`` on (0-based), if a mode is set."""
        return self.cfg.mode != "none" and self.cfg.eps > 0 and epoch >= self.cfg.warmup_epochs

    def pick(self, n: int) -> torch.Tensor:
        """Indices of the samples of a batch of ``n`` to augment."""
        m = max(1, round(self.cfg.fraction * n))
        if m >= n:
            return torch.arange(n)
        return torch.randperm(n, generator=self.generator)[:m].sort().values

    def sample_eps(self, m: int) -> float | torch.Tensor:
        """Fixed eps, or per-sample eps ~ U(0, eps] (1 - U[0, 1) keeps zero out)."""
        if self.cfg.eps_sampling == "fixed":
            return self.cfg.eps
        return self.cfg.eps * (1.0 - torch.rand(m, generator=self.generator))

    def _craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor,
               grad: torch.Tensor | None) -> list[torch.Tensor]:
        mode = self.cfg.mode
        if mode == "pgd":
            step = self.cfg.pgd_step_size or None
            return [pgd(model, x, y, eps, steps=self.cfg.pgd_steps, step_size=step, loss=self.loss,
                        generator=self.generator)]
        if grad is not None:  # fused: the input gradient came with the clean backward pass
            return [signed_step(x, grad, eps, d) for d in _DIRECTIONS[mode]]
        out = []
        if mode in ("fgsm", "both"):
            out.append(fgsm(model, x, y, eps, self.loss))
        if mode in ("invfgsm", "both"):
            out.append(invfgsm(model, x, y, eps, self.loss))
        return out

    def augment(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                input_grad: torch.Tensor | None = None) -> AugmentedBatch:
        """Adversarial copies of a picked subset; appended, or replacing the clean samples.

        With ``input_grad`` (fused mode) the crafting reuses that gradient and only the
        adversarial samples are returned (the clean ones were already trained on).
        """
        idx = self.pick(len(x))
        eps = self.sample_eps(len(idx))
        grad = input_grad[idx] if input_grad is not None else None
        advs = self._craft(model, x[idx], y[idx], eps, grad)
        x_adv = torch.cat(advs)
        y_adv = torch.cat([y[idx]] * len(advs))
        if input_grad is not None:
            return AugmentedBatch(x_adv, y_adv, len(x_adv))
        if self.cfg.combine == "append":
            return AugmentedBatch(torch.cat([x, x_adv]), torch.cat([y, y_adv]), len(x_adv))
        # replace: with two directions ("both") the subset's first half takes FGSM, the rest inverse FGSM
        x_new = x.clone()
        if len(advs) == 1:
            x_new[idx] = advs[0]
        else:
            half = len(idx) // 2
            x_new[idx[:half]] = advs[0][:half]
            x_new[idx[half:]] = advs[1][half:]
        return AugmentedBatch(x_new, y, len(idx))
