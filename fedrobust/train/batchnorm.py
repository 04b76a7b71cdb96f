"""Re-estimate BatchNorm running statistics on data the server holds.

FedAvg averages each client's running mean and variance, but the average of per-client variances
misses the spread *between* clients' means, so under label skew the global model's eval-mode
statistics are off. One no-grad pass over a server-side split in train mode (cumulative average,
no weight change) fixes that; the weights themselves are untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from fedrobust.device import device_of


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> nn.Module:
    """Reset every BatchNorm's running stats and re-estimate them on ``images``; returns ``model``
    in eval mode. Only buffers change."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(images) == 0:
        return model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    model.train()
    device = device_of(model)
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        if len(chunk) > 1:  # BatchNorm in train mode needs more than one value per channel
            model(chunk.to(device))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    return model.eval()
