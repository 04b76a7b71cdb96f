"""MedMNIST classification: class-id labels, (N, classes) logits, MedMNIST's ACC/AUC, label-skew partitions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedrobust.attacks.gradient import classification_loss, margin_loss
from fedrobust.augment.classic import ClassicAugment
from fedrobust.data.catalog import dataset_info
from fedrobust.data.loading import ImageSplit, load_from_config, load_own_file
from fedrobust.data.partition import label_table, partition_indices
from fedrobust.edge.scores import softmax
from fedrobust.predict import predicted
from fedrobust.tasks.base import Task
from fedrobust.tasks.specs import CLASSIFICATION
from fedrobust.train.local import class_weights
from fedrobust.train.prior import OffsetLogits, prior_offset

if TYPE_CHECKING:
    from fedrobust.config.schema import AugmentSection, DataSection, PartitionSection, TrainSection


def medmnist_metrics(y_true: np.ndarray, y_score: np.ndarray, task: str) -> tuple[float, float]:
    """ACC and AUC exactly as MedMNIST's evaluator computes them."""
    from medmnist.evaluator import getACC, getAUC

    acc = float(getACC(y_true, y_score, task))
    try:
        auc = float(getAUC(y_true, y_score, task))
    except ValueError:  # a split holding a single class has no AUC
        auc = float("nan")
    return acc, auc


class Classification(Task):
    spec = CLASSIFICATION
    output_name = "logits"

    def load(self, data: DataSection, split: str) -> ImageSplit:
        return load_from_config(data, split)

    def load_file(self, path: str, data: DataSection, split: str) -> ImageSplit:
        return load_own_file(path, data.dataset, split, image_size=data.image_size, as_rgb=data.as_rgb)

    def flipped_targets(self, split: ImageSplit) -> torch.Tensor:
        """The class permutation y -> y + 1 (mod classes): every label wrong, the class sizes kept."""
        return (split.labels + 1) % max(2, split.info.num_classes)

    def backdoor_targets(self, targets: torch.Tensor, target_class: int) -> torch.Tensor:
        return torch.full_like(targets, target_class)

    def backdoor_success(self, logits: torch.Tensor | np.ndarray, targets: torch.Tensor, target_class: int) -> float:
        """Share of triggered test images of the other classes predicted as ``target_class``."""
        other = np.asarray(targets) != target_class
        hit = np.asarray(predicted(logits)) == target_class
        return float(hit[other].mean()) if other.any() else float("nan")

    def class_weight(self, cfg: TrainSection, train: ImageSplit) -> torch.Tensor | None:
        return class_weights(cfg, train.labels, train.info.num_classes)

    def adjusted(self, model: torch.nn.Module, cfg: TrainSection, shard: ImageSplit,
                 train: ImageSplit) -> torch.nn.Module:
        if cfg.logit_adjustment == "none":
            return model
        return OffsetLogits(model, prior_offset(shard.labels, train.labels, train.info.num_classes))

    def input_shape(self, data: DataSection) -> tuple[int, int]:
        info = dataset_info(data.dataset)
        return (3 if data.as_rgb else info.channels), info.num_classes

    def partition(self, train: ImageSplit, p: PartitionSection, seed: int) -> list[np.ndarray]:
        return partition_indices(train.labels.numpy(), p.num_clients, p.scheme, seed=seed, alpha=p.alpha,
                                 labels_per_client=p.labels_per_client, min_samples=p.min_samples)

    def partition_table(self, train: ImageSplit, parts: list[np.ndarray]) -> tuple[list[str], np.ndarray]:
        names = [n.split(",")[0][:10] for n in train.info.class_names]
        return names, label_table(train.labels.numpy(), parts, train.info.num_classes)

    def classic(self, names: list[str], aug: AugmentSection, image_size: int) -> ClassicAugment:
        return ClassicAugment.of(names, aug, image_size)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean",
             class_weight: torch.Tensor | None = None) -> torch.Tensor:
        return classification_loss(logits, y, reduction, class_weight)

    def worst_case(self, outputs: int) -> tuple[str, ...]:
        """The sweep's FGSM and PGD, then AutoAttack's standard set (DLR needs three or more classes)."""
        return "fgsm", "pgd", "apgd-ce", "apgd-dlr" if outputs >= 3 else "apgd-margin", "square"

    def margin(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return margin_loss(logits, y, reduction)

    def per_sample(self, logits: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> np.ndarray:
        return np.asarray(predicted(logits) == y, dtype=np.float64)

    def score(self, logits: np.ndarray, split: ImageSplit) -> dict[str, float]:
        acc, auc = medmnist_metrics(split.labels.numpy(), softmax(logits), split.info.medmnist_task)
        return {"acc": acc, "auc": auc}

    def chance(self, split: ImageSplit) -> float:
        labels = split.labels.numpy()
        return float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")

    def metadata(self, data: DataSection) -> dict[str, Any]:
        info = dataset_info(data.dataset)
        return {"dataset": info.flag, "task": info.task, "class_names": list(info.class_names)}
