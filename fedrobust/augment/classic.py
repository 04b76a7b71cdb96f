"""The classic augmentations the reference paper compares adversarial augmentation against."""

from __future__ import annotations

import torch

from fedrobust.config import AugmentSection
from fedrobust.tvcompat import import_torchvision


class ClassicAugment:
    """Per-sample random flip / rotation / padded crop / brightness-contrast jitter (torchvision v2).

    Applied sample by sample so every image gets its own random parameters (a v2 transform on
    a batch tensor would draw one set for the whole batch).
    """

    def __init__(self, names: list[str], image_size: int, rotation_degrees: float = 10.0,
                 crop_padding: int = 2, jitter: float = 0.2) -> None:
        import_torchvision()
        from torchvision.transforms import v2
        steps = []
        for name in names:
            if name == "flip":
                steps.append(v2.RandomHorizontalFlip())
            elif name == "rotation":
                steps.append(v2.RandomRotation(rotation_degrees))
            elif name == "crop":
                steps.append(v2.RandomCrop(image_size, padding=crop_padding, padding_mode="reflect"))
            elif name == "jitter":
                steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter))
            else:
                raise ValueError(f"unknown classic augmentation {name!r}")
        self.names = list(names)
        self.transform = v2.Compose(steps) if steps else None

    @classmethod
    def of(cls, names: list[str], aug: AugmentSection, image_size: int) -> ClassicAugment:
        """``names`` with the strengths of an ``[augment]`` section (distillation names its own views)."""
        return cls(names, image_size, aug.rotation_degrees, aug.crop_padding, aug.jitter)

    def __bool__(self) -> bool:
        return self.transform is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            return x
        return torch.stack([self.transform(img) for img in x]).clamp_(0.0, 1.0)
