"""Server-side exponential moving average of the global model (Polyak averaging of the FL iterate).

Under label skew the aggregated model swings by a few points from round to round around its
plateau, and selecting a round on a small val split picks up that noise. Averaging the global
weights over rounds damps the swing without touching what clients train from (they keep getting
the raw aggregate). Not wired into the round loop: replaying finished runs with
``benchmarks/server_average.py`` showed no gain (docs/results/federated_accuracy.md). torch's
``AveragedModel`` does the arithmetic; BatchNorm statistics are copied from the newest model
(the server may re-estimate them on val afterwards).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

StateDict = dict[str, torch.Tensor]


class GlobalAverage:
    """EMA of global weights: ``avg <- decay * avg + (1 - decay) * new``; the first model starts it."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self._current = copy.deepcopy(model)
        self._avg = AveragedModel(self._current, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)

    def update(self, state: StateDict) -> StateDict:
        """Fold the newest global ``state`` into the average; returns the averaged weights with
        ``state``'s buffers (BatchNorm statistics, counters)."""
        self._current.load_state_dict(state)
        self._avg.update_parameters(self._current)
        params = dict(self._avg.module.named_parameters())
        return {k: (params[k].detach().clone() if k in params else v.detach().clone()) for k, v in state.items()}
