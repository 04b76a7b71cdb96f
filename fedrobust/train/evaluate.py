"""Held-out evaluation of any task: its metrics (``Task.score``) and mean loss, clean or under FGSM."""

from __future__ import annotations

import torch
from torch import nn

from fedrobust.attacks import fgsm
from fedrobust.predict import torch_logits
from fedrobust.tasks.base import Split, Task
from fedrobust.train.batches import iterate_batches


def evaluate(model: nn.Module, data: Split, batch_size: int = 256, x: torch.Tensor | None = None, *,
             task: Task) -> dict[str, float]:
    """The task's metrics and mean loss on ``data`` (or on replacement images ``x`` with its targets)."""
    logits = torch_logits(model, data.images if x is None else x, batch_size)
    loss = float(task.loss(logits, data.targets))
    return {**task.score(logits.numpy(), data), "loss": loss}


def adversarial_images(model: nn.Module, data: Split, eps: float, batch_size: int = 256, *,
                       task: Task) -> torch.Tensor:
    """FGSM images of a whole split, crafted batch by batch against ``model`` on the task's loss."""
    return torch.cat([fgsm(model, xb, yb, eps, task.loss) for xb, yb in
                      iterate_batches(data.images, data.targets, batch_size)])


def evaluate_robust(model: nn.Module, data: Split, eps_list: list[float], batch_size: int = 256, *,
                    task: Task) -> dict[str, dict[str, float]]:
    """Metrics and loss under FGSM per eps (keys are the eps as strings, for JSON)."""
    return {f"{eps:g}": evaluate(model, data, batch_size,
                                 x=adversarial_images(model, data, eps, batch_size, task=task), task=task)
            for eps in eps_list}


__all__ = ["adversarial_images", "evaluate", "evaluate_robust"]
