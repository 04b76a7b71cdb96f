"""The interface between the pipeline and a task: one object answers every task-specific question.

The federation, adversarial augmentation, attacks, sweeps, export and reports hold a ``Task`` and ask
it; they never look at labels, masks, logit shapes or metric names themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from fedrobust.errors import ConfigError
from fedrobust.tasks.specs import TaskSpec

if TYPE_CHECKING:
    from fedrobust.config.schema import AugmentSection, DataSection, PartitionSection, TrainSection


class Split(Protocol):
    """One split in memory: images (N, C, H, W) float32 in [0, 1] and their targets, N of them."""

    images: torch.Tensor
    split: str

    @property
    def targets(self) -> torch.Tensor: ...

    def __len__(self) -> int: ...

    def subset(self, indices: np.ndarray | list[int]) -> Split: ...


class PairedAugment(Protocol):
    """Classic random views: ``(images, targets) -> (images, targets)``, truthy when it does anything."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def __bool__(self) -> bool: ...


class Task(ABC):
    """What differs between tasks. Stateless: one instance per task serves every run."""

    spec: TaskSpec
    output_name: str  # the ONNX output

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def headline(self) -> str:
        return self.spec.headline

    # data --------------------------------------------------------------------------------------
    @abstractmethod
    def load(self, data: DataSection, split: str) -> Split:
        """``split`` (train/val/test) as ``[data]`` describes it."""

    @abstractmethod
    def input_shape(self, data: DataSection) -> tuple[int, int]:
        """(input channels, output channels) of the run's models."""

    @abstractmethod
    def partition(self, train: Split, p: PartitionSection, seed: int) -> list[np.ndarray]:
        """One index array per client into ``train``, by ``[partition]``."""

    @abstractmethod
    def partition_table(self, train: Split, parts: list[np.ndarray]) -> tuple[list[str], np.ndarray]:
        """(column names, counts per client and column) of what the partition balances on."""

    @abstractmethod
    def classic(self, names: list[str], aug: AugmentSection, image_size: int) -> PairedAugment:
        """Random flips/rotations/crops/jitter, applied to images and (where spatial) their targets alike."""

    def load_file(self, path: str, data: DataSection, split: str) -> Split:
        """``split`` of a node's own data file (deployment's ``--data-file``), used whole."""
        raise ConfigError(f"--data-file: a {self.name} node takes its data from --data-root, not one file")

    @abstractmethod
    def flipped_targets(self, split: Split) -> torch.Tensor:
        """``split``'s targets as a label-flipping hospital trains on them (data poisoning)."""

    @abstractmethod
    def backdoor_targets(self, targets: torch.Tensor, target_class: int) -> torch.Tensor:
        """What a backdooring hospital labels its triggered images with."""

    @abstractmethod
    def backdoor_success(self, logits: torch.Tensor | np.ndarray, targets: torch.Tensor, target_class: int) -> float:
        """Attack success rate on triggered test images: the share of those the backdoor could change that the
        model now answers as the attacker wants."""

    # learning ----------------------------------------------------------------------------------
    def class_weight(self, cfg: TrainSection, train: Split) -> torch.Tensor | None:
        """Per-class loss weights from the whole training split (``train.class_weights``), or None."""
        return None

    def adjusted(self, model: torch.nn.Module, cfg: TrainSection, shard: Split, train: Split) -> torch.nn.Module:
        """The model a client trains on its ``shard`` of ``train`` (``train.logit_adjustment``): ``model`` itself
        unless the task corrects its logits for the shard's skew."""
        return model

    @abstractmethod
    def loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean",
             class_weight: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss, per sample before ``reduction``; also what FGSM / inverse FGSM differentiate."""

    @abstractmethod
    def margin(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """A loss without saturation for the ``*-margin`` attacks (larger = more wrong)."""

    @abstractmethod
    def worst_case(self, outputs: int) -> tuple[str, ...]:
        """The attacks whose per-image worst case is the sweep's ``autoattack``, in the order they run, for a
        model with ``outputs`` output channels."""

    @abstractmethod
    def per_sample(self, logits: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> np.ndarray:
        """A score in [0, 1] per sample (1 = right): training accuracy, PGD restarts' worst case."""

    # evaluation --------------------------------------------------------------------------------
    @abstractmethod
    def score(self, logits: np.ndarray, split: Split) -> dict[str, float]:
        """The task's metrics (``spec.metrics``) of logits of any runtime (torch or onnxruntime)."""

    @abstractmethod
    def chance(self, split: Split) -> float:
        """The headline metric of a constant prediction: the floor sanity checks compare to."""

    def describe(self, m: dict[str, Any]) -> str:
        """Metrics as a short human phrase, e.g. ``acc 0.782 auc 0.830``."""
        return " ".join(f"{k} {m[k]:.3f}" for k in self.spec.metrics[:2] if k in m)

    def pictures(self, model: Callable[[], torch.nn.Module], split: Split, eps: float, path: Path) -> Path | None:
        """Example predictions of ``model()``, clean and under FGSM at ``eps``, as one PNG at ``path`` (None: the
        task has none worth drawing)."""
        return None

    # the edge ----------------------------------------------------------------------------------
    @abstractmethod
    def metadata(self, data: DataSection) -> dict[str, Any]:
        """The task-specific fields of an exported model's metadata (task, class names, threshold...)."""

    min_parity_agreement: float = 1.0  # share of predictions ONNX fp32 must share with torch
    prediction_unit: str = "images"  # what one prediction is about (agreement is counted in these)
