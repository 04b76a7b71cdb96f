"""The classic augmentations the reference paper compares adversarial augmentation against."""

from __future__ import annotations

import torch

from fedrobust.config import AugmentSection
from fedrobust.tvcompat import import_torchvision


class ClassicAugment:
    """Per-sample random flip / rotation / padded crop / brightness-contrast jitter (torchvision v2).

    Applied sample by sample so every image gets its own random parameters (a v2 transform on
    a batch tensor would draw one set for the whole batch). With ``masks``, called on
    ``(images, masks)`` it moves each mask with its image (v2 draws one set of parameters for the pair,
    resamples the mask nearest-neighbour and leaves it out of the colour jitter).
    """

    def __init__(self, names: list[str], image_size: int, rotation_degrees: float = 10.0,
                 crop_padding: int = 2, jitter: float = 0.2, masks: bool = False) -> None:
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
        self.masks = masks

    @classmethod
    def of(cls, names: list[str], aug: AugmentSection, image_size: int, masks: bool = False) -> ClassicAugment:
        """``names`` with the strengths of an ``[augment]`` section (distillation names its own views)."""
        return cls(names, image_size, aug.rotation_degrees, aug.crop_padding, aug.jitter, masks)

    def __bool__(self) -> bool:
        return self.transform is not None

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Random views of a batch of images alone."""
        if self.transform is None:
            return x
        return torch.stack([self.transform(img) for img in x]).clamp_(0.0, 1.0)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random views of ``(images, targets)``: labels stay as they are, masks move with their images."""
        if self.transform is None:
            return x, y
        if not self.masks:
            return self.images(x), y
        from torchvision import tv_tensors

        pairs = [self.transform(tv_tensors.Image(img), tv_tensors.Mask(mask)) for img, mask in zip(x, y, strict=True)]
        return (torch.stack([p[0].as_subclass(torch.Tensor) for p in pairs]).clamp_(0.0, 1.0),
                torch.stack([p[1].as_subclass(torch.Tensor) for p in pairs]))
