"""Held-out evaluation: accuracy and AUC exactly as MedMNIST's evaluator computes them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedrobust.attacks import fgsm
from fedrobust.data.loading import ImageSplit
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
    """Accuracy and AUC of logits computed elsewhere (e.g. by onnxruntime) on ``data``."""
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    acc, auc = medmnist_metrics(data.labels.numpy(), probs, data.info.medmnist_task)
    return {"acc": acc, "auc": auc}


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities in eval mode."""
    model.eval()
    return torch.cat([torch.softmax(model(xb), 1) for xb, _ in
                      iterate_batches(x, torch.zeros(len(x)), batch_size)])


def evaluate(model: nn.Module, data: ImageSplit, batch_size: int = 256,
             x: torch.Tensor | None = None) -> dict[str, float]:
    """Accuracy, AUC and mean loss on ``data`` (or on replacement images ``x`` with its labels)."""
    images = data.images if x is None else x
    probs = predict_proba(model, images, batch_size)
    loss = float(torch.nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), data.labels))
    acc, auc = medmnist_metrics(data.labels.numpy(), probs.numpy(), data.info.medmnist_task)
    return {"acc": acc, "auc": auc, "loss": loss}


def adversarial_images(model: nn.Module, data: ImageSplit, eps: float, batch_size: int = 256) -> torch.Tensor:
    """FGSM images of a whole split, crafted batch by batch against ``model``."""
    return torch.cat([fgsm(model, xb, yb, eps) for xb, yb in
                      iterate_batches(data.images, data.labels, batch_size)])


def evaluate_robust(model: nn.Module, data: ImageSplit, eps_list: list[float],
                    batch_size: int = 256) -> dict[str, dict[str, float]]:
    """FGSM accuracy/AUC/loss per eps (keys are the eps as strings, for JSON)."""
    return {f"{eps:g}": evaluate(model, data, batch_size, x=adversarial_images(model, data, eps, batch_size))
            for eps in eps_list}


__all__ = ["adversarial_images", "evaluate", "evaluate_robust", "medmnist_metrics", "predict_proba", "score_logits"]
