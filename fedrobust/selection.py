"""Which checkpoint a run reports: the newest, or the epoch / round best on the server's val split
(the test split never selects). One rule for centralized training, federated rounds and distillation."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

VAL_KEYS = {"val_auc": "auc", "val_acc": "acc", "val_fgsm": "fgsm_acc"}


def selection_score(select: str, metrics: dict[str, float], step: int, prefix: str = "") -> float:
    """How good ``step`` is under ``select``: "last" prefers the newest step; "val_auc" / "val_acc" /
    "val_fgsm" read ``metrics[prefix + auc | acc | fgsm_acc]``. A missing or NaN value (e.g. the AUC of
    a one-class split) never wins."""
    if select == "last":
        return float(step)
    value = metrics.get(prefix + VAL_KEYS[select], math.nan)
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
