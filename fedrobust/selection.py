"""Which checkpoint a run reports: the newest, or the epoch / round best on the server's val split
(the test split never selects). One rule for centralized training, federated rounds and distillation."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def selection_score(select: str, metrics: dict[str, float], step: int, prefix: str = "",
                    headline: str = "acc") -> float:
    """How good ``step`` is under ``select``: "last" prefers the newest step; "val_<metric>" (e.g. val_auc,
    val_iou) reads ``metrics[prefix + metric]``, "val_fgsm" the headline metric under FGSM,
    ``metrics[prefix + "fgsm_" + headline]``. A missing or NaN value (e.g. the AUC of a one-class split)
    never wins."""
    if select == "last":
        return float(step)
    key = f"fgsm_{headline}" if select == "val_fgsm" else select.removeprefix("val_")
    value = metrics.get(prefix + key, math.nan)
    return -math.inf if math.isnan(value) else float(value)


class KeepBest:
    """The best weights seen so far under ``select``, kept in memory (epochs of one process)."""

    def __init__(self, select: str) -> None:
        self.select = select
        self.score, self.step = -math.inf, 0
        self.state: dict[str, torch.Tensor] | None = None

    def offer(self, step: int, metrics: dict[str, float], model: nn.Module) -> None:
        score = selection_score(self.select, metrics, step)
        if score > self.score:
            self.score, self.step, self.state = score, step, copy.deepcopy(model.state_dict())

    def restore(self, model: nn.Module) -> nn.Module:
        """``model`` with the best weights (unchanged if nothing was offered)."""
        if self.state is not None:
            model.load_state_dict(self.state)
        return model
