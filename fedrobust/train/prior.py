"""Logit adjustment for label-skewed clients (``train.logit_adjustment = "client_prior"``).

A client whose shard has class prior pi_k sees p_k(y | x) ~ p(x | y) pi_k(y), not the federation's
p(y | x) ~ p(x | y) pi(y). Training on ``logits + log pi_k - log pi`` lets the shared model's plain
logits estimate the federation's posterior while each client fits its own labels, so a client with
few images of a class no longer pushes that class down in the global model (the calibration of
FedLC, Zhang et al., ICML 2022, with the offset taken relative to the global prior). A client's
adversarial copies are crafted on the same adjusted loss it trains on; evaluation and every attack on
the global model use its plain logits.
"""

from __future__ import annotations

import torch
from torch import nn

from fedrobust.device import device_of


def class_prior(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class frequencies; a class the labels lack counts as half a sample, so its log-prior is finite."""
    counts = torch.bincount(labels.long().reshape(-1), minlength=num_classes).double().clamp_min(0.5)
    return (counts / counts.sum()).float()


def prior_offset(local_labels: torch.Tensor, global_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``log pi_local - log pi_global`` per class: zero when the shard has the federation's prior."""
    return class_prior(local_labels, num_classes).log() - class_prior(global_labels, num_classes).log()


class OffsetLogits(nn.Module):
    """``model(x) + offset``; shares ``model``'s parameters and buffers (train it, keep ``model``)."""

    def __init__(self, model: nn.Module, offset: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("offset", offset.detach().to(device_of(model), copy=True), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + self.offset
