"""A torch model's logits for many images, batch by batch: the one forward pass that evaluation,
export parity, sweeps and score-based attacks share (onnxruntime's is ``EdgeModel.predict_logits``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedrobust.attacks.gradient import frozen
from fedrobust.device import device_of


@torch.no_grad()
def torch_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, classes) logits on the CPU; eval mode for the duration (BatchNorm statistics are read, never
    updated; the training flag is restored), each batch moved to the model's device."""
    device = device_of(model)
    with frozen(model):
        return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def predicted(logits: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """The predicted class of each row (torch or numpy alike): the argmax of C >= 2 logits, or ``z > 0``
    for a single-logit head, whose argmax would always be class 0."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long() if isinstance(logits, torch.Tensor) else (logits[:, 0] > 0).astype(np.int64)
    return logits.argmax(1)
