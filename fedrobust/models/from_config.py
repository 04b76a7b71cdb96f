"""A run's models from its config: the one place that knows what shape of input a run's models see."""

from __future__ import annotations

from torch import nn

from fedrobust.config import DataSection, ExperimentConfig
from fedrobust.device import resolve_device
from fedrobust.models.registry import build_model
from fedrobust.tasks.registry import task_of


def input_shape(data: DataSection) -> tuple[int, int]:
    """(input channels, output channels: classes, or 1 for a binary mask) of the run's models."""
    return task_of(data.task).input_shape(data)


def model_for(cfg: ExperimentConfig, name: str | None = None, pretrained: bool = True) -> nn.Module:
    """An untrained ``name`` (default: the ``[model]`` section's architecture, with its stem, norm and,
    unless ``pretrained`` is False, its local weights) shaped for the run's data, on ``run.device``:
    the one place a model is placed (everything handed a model computes where it is)."""
    channels, classes = input_shape(cfg.data)
    m = cfg.model
    if name is not None and name != m.name:
        model = build_model(name, channels, classes, cfg.data.image_size)
    else:
        model = build_model(m.name, channels, classes, cfg.data.image_size,
                            pretrained=m.pretrained if pretrained else "", small_stem=m.small_stem, norm=m.norm)
    return model.to(resolve_device(cfg.run.device))
