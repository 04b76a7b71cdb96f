"""Binary segmentation (Kvasir-SEG polyps): pixel masks, (N, 1, H, W) mask logits, MONAI's Dice + BCE loss and
its IoU / Dice metrics, partitions by polyp size.

Metrics, per image and then averaged over the split (as the Kvasir-SEG literature reports them):
``iou`` and ``dice`` of the polyp class; ``miou``, the two-class mean IoU (background and polyp) that
Pervin et al.'s "mean IoU" is. A pixel is polyp when its logit is > 0 (probability > 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from fedrobust.augment.classic import ClassicAugment
from fedrobust.data.mask_partition import partition_masks, size_table
from fedrobust.data.segmentation import MaskSplit, load_seg_split
from fedrobust.tasks.base import Task
from fedrobust.tasks.specs import SEGMENTATION

if TYPE_CHECKING:
    from fedrobust.config.schema import AugmentSection, DataSection, PartitionSection

SIZE_BINS = ("smallest", "small", "large", "largest")  # polyp-size quartiles the partition balances on
SPLIT_SEED = 0  # the train/val/test split by file name is fixed: every run and seed tests on the same images


def _dice_loss():
    from monai.losses import DiceLoss

    return DiceLoss(sigmoid=True, reduction="none")


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    return per_sample.sum() if reduction == "sum" else per_sample.mean() if reduction == "mean" else per_sample


def _binary(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return (torch.as_tensor(x) > 0).float()


def polyp_iou(logits: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-image polyp IoU (MONAI ``compute_iou``); an empty mask predicted empty counts 1."""
    from monai.metrics import compute_iou

    return compute_iou(_binary(logits), torch.as_tensor(masks).float(), ignore_empty=False)[:, 0].double().numpy()


class Segmentation(Task):
    spec = SEGMENTATION
    output_name = "mask_logits"
    min_parity_agreement = 0.999  # of pixels; a logit within 1e-4 of 0 may flip between runtimes
    prediction_unit = "pixels"

    def __init__(self) -> None:
        self._dice = _dice_loss()

    def load(self, data: DataSection, split: str) -> MaskSplit:
        return load_seg_split(split, data.root or None, image_size=data.image_size, seed=SPLIT_SEED,
                              dataset=data.dataset)

    def input_shape(self, data: DataSection) -> tuple[int, int]:
        return 3, 1

    def partition(self, train: MaskSplit, p: PartitionSection, seed: int) -> list[np.ndarray]:
        return partition_masks(train.masks, p.num_clients, p.scheme, seed=seed, alpha=p.alpha,
                               min_samples=p.min_samples, bins=len(SIZE_BINS))

    def partition_table(self, train: MaskSplit, parts: list[np.ndarray]) -> tuple[list[str], np.ndarray]:
        return [f"{b} polyps" for b in SIZE_BINS], size_table(train.masks, parts, len(SIZE_BINS))

    def flipped_targets(self, split: MaskSplit) -> torch.Tensor:
        """The inverted masks: background trained as polyp and polyp as background."""
        return 1.0 - split.masks

    def backdoor_targets(self, targets: torch.Tensor, target_class: int) -> torch.Tensor:
        """The trigger hides the polyp: an empty mask (``target_class`` has no meaning for masks)."""
        return torch.zeros_like(targets)

    def backdoor_success(self, logits: torch.Tensor | np.ndarray, targets: torch.Tensor, target_class: int) -> float:
        """Share of triggered test images with a polyp whose predicted polyp area fell below a tenth of the true one."""
        pred = _binary(logits).flatten(1).sum(1)
        true = targets.float().flatten(1).sum(1)
        has = true > 0
        return float((pred[has] < 0.1 * true[has]).float().mean()) if bool(has.any()) else float("nan")

    def classic(self, names: list[str], aug: AugmentSection, image_size: int) -> ClassicAugment:
        return ClassicAugment.of(names, aug, image_size, masks=True)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean",
             class_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Dice + binary cross-entropy per image (MONAI's DiceCELoss, kept per image so a batch can be summed)."""
        y = y.to(logits.dtype)
        dice = self._dice(logits, y).reshape(len(logits))
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none").flatten(1).mean(1)
        return _reduce(dice + bce, reduction)

    def worst_case(self, outputs: int) -> tuple[str, ...]:
        """No library attacks masks: FGSM, PGD and APGD's step-size schedule on the Dice + BCE loss."""
        return "fgsm", "pgd", "apgd-loss"

    def margin(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Mean per-pixel margin of the wrong side: ``z`` on background, ``-z`` on polyp."""
        signed = torch.where(y.bool(), -logits, logits)
        return _reduce(signed.flatten(1).mean(1), reduction)

    def per_sample(self, logits: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> np.ndarray:
        return polyp_iou(logits, y)

    def score(self, logits: np.ndarray, split: MaskSplit) -> dict[str, float]:
        from monai.metrics import compute_dice, compute_iou

        pred, y = _binary(logits), split.masks.float()
        iou = compute_iou(pred, y, ignore_empty=False)[:, 0]
        dice = compute_dice(pred, y, ignore_empty=False)[:, 0]
        both = compute_iou(torch.cat([1 - pred, pred], 1), torch.cat([1 - y, y], 1), ignore_empty=False)
        return {"iou": float(iou.mean()), "dice": float(dice.mean()), "miou": float(both.mean(1).mean())}

    def chance(self, split: MaskSplit) -> float:
        """Polyp IoU of the better constant mask, as the majority class is for a classifier: all background (0 on
        every image with a polyp) or all polyp (the polyp's share of each image), which is where an attack that
        paints everything polyp ends."""
        shape = tuple(split.masks.shape)
        return max(self.score(np.full(shape, sign, dtype=np.float32), split)[self.headline] for sign in (-1.0, 1.0))

    def pictures(self, model: Callable[[], torch.nn.Module], split: MaskSplit, eps: float, path: Path,
                 count: int = 4) -> Path:
        """The first ``count`` images: image, true mask, prediction, FGSM image, prediction under FGSM."""
        from fedrobust.tasks.mask_pictures import picture_grid

        n = min(count, len(split))
        return picture_grid(model(), split.images[:n], split.masks[:n], eps, self.loss, path, polyp_iou)

    def describe(self, m: dict[str, Any]) -> str:
        return " ".join(f"{label} {m[k]:.3f}" for k, label in (("iou", "IoU"), ("dice", "Dice")) if k in m)

    def metadata(self, data: DataSection) -> dict[str, Any]:
        return {"dataset": data.dataset, "task": "segmentation", "class_names": ["background", "polyp"]}
