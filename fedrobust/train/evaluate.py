"""Held-out evaluation: accuracy and AUC exactly as MedMNIST's evaluator computes them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedrobust.attacks import fgsm
from fedrobust.data.loading import ImageSplit
from fedrobust.edge.scores import softmax
from fedrobust.predict import torch_logits
from fedrobust.train.batches import iterate_batches


def medmnist_metrics(y_true: np.ndarray, y_score: np.ndarray, task: str) -> tuple[float, float]:
    from medmnist.evaluator import getACC, getAUC

    acc = float(getACC(y_true, y_score, task))
    try:
        auc = float(getAUC(y_true, y_score, task))
    except ValueError:  # a split holding a single class has no AUC
        auc = float("nan")
    return acc, auc


def score_logits(logits: np.ndarray, data: ImageSplit) -> dict[str, float]:
    """Accuracy and AUC of ``data``'s labels from logits of any runtime (torch or onnxruntime)."""
    acc, auc = medmnist_metrics(data.labels.numpy(), softmax(logits), data.info.medmnist_task)
    return {"acc": acc, "auc": auc}


def evaluate(model: nn.Module, data: ImageSplit, batch_size: int = 256,
             x: torch.Tensor | None = None) -> dict[str, float]:
    """Accuracy, AUC and mean cross-entropy on ``data`` (or on replacement images ``x`` with its labels)."""
    logits = torch_logits(model, data.images if x is None else x, batch_size)
    loss = float(torch.nn.functional.cross_entropy(logits, data.labels))
    return {**score_logits(logits.numpy(), data), "loss": loss}


def adversarial_images(model: nn.Module, data: ImageSplit, eps: float, batch_size: int = 256) -> torch.Tensor:
    """FGSM images of a whole split, crafted batch by batch against ``model``."""
    return torch.cat([fgsm(model, xb, yb, eps) for xb, yb in
                      iterate_batches(data.images, data.labels, batch_size)])


def evaluate_robust(model: nn.Module, data: ImageSplit, eps_list: list[float],
                    batch_size: int = 256) -> dict[str, dict[str, float]]:
    """FGSM accuracy/AUC/loss per eps (keys are the eps as strings, for JSON)."""
    return {f"{eps:g}": evaluate(model, data, batch_size, x=adversarial_images(model, data, eps, batch_size))
            for eps in eps_list}


__all__ = ["adversarial_images", "evaluate", "evaluate_robust", "medmnist_metrics", "score_logits"]
