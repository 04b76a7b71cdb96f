"""The picture grid of a segmentation report: people would rather look at masks than read IoU tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedrobust.attacks import fgsm
from fedrobust.attacks.gradient import LossFn
from fedrobust.predict import torch_logits

COLUMNS = ("image", "true mask", "prediction", "FGSM image", "prediction under FGSM")


def _overlay(image: np.ndarray, mask: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    """``image`` (H, W, 3) in [0, 1] with ``mask`` pixels tinted 45 % toward ``colour``."""
    out = image.copy()
    out[mask] = 0.55 * out[mask] + 0.45 * np.asarray(colour)
    return out


def picture_grid(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, eps: float, loss: LossFn,
                 path: Path, iou: Callable[[torch.Tensor, torch.Tensor], np.ndarray]) -> Path:
    """One row per image: the image, its true mask, the prediction, the FGSM image at ``eps`` (crafted on
    ``model`` against ``loss``) and the prediction on it, each prediction titled with its polyp IoU (``iou``:
    per-image scorer of logits and masks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_adv = fgsm(model, images, masks, eps, loss)
    clean, adv = torch_logits(model, images), torch_logits(model, x_adv)
    ious = iou(clean, masks), iou(adv, masks)
    rows = len(images)
    fig, axes = plt.subplots(rows, len(COLUMNS), figsize=(2.1 * len(COLUMNS), 2.2 * rows), squeeze=False)
    for i in range(rows):
        img = images[i].permute(1, 2, 0).numpy()
        img_adv = x_adv[i].permute(1, 2, 0).numpy()
        true = masks[i, 0].numpy() > 0.5
        panels = [
            (img, ""),
            (_overlay(img, true, (0.1, 0.9, 0.1)), ""),
            (_overlay(img, clean[i, 0].numpy() > 0, (0.95, 0.1, 0.1)), f"IoU {ious[0][i]:.2f}"),
            (img_adv, f"eps {eps:g}"),
            (_overlay(img_adv, adv[i, 0].numpy() > 0, (0.95, 0.1, 0.1)), f"IoU {ious[1][i]:.2f}"),
        ]
        for j, (picture, note) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(np.clip(picture, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title((COLUMNS[j] + "\n" if i == 0 else "") + note, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
