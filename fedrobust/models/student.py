"""The compact edge student: a small VGG-style CNN (about 140 k parameters)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _block(cin: int, cout: int, norm: Callable[[int], nn.Module]) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True)]


class StudentCNN(nn.Module):
    """Five 3x3 conv layers, two max-pools, global average pooling, one linear head.

    Sized for 28-32 px MedMNIST images and for fast int8 inference with onnxruntime.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        w, n = width, norm_layer
        self.features = nn.Sequential(
            *_block(in_channels, w, n), *_block(w, w, n), nn.MaxPool2d(2),
            *_block(w, 2 * w, n), *_block(2 * w, 2 * w, n), nn.MaxPool2d(2),
            *_block(2 * w, 4 * w, n),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
