"""Where torch computes: ``run.device`` resolved once, and "the model's device" everywhere else.

The model is placed when it is built (``model_for``); every function that is handed a model moves its
inputs to that model's device and returns results where the inputs were, so data stays on the CPU and
nothing but the model needs to know the setting.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from fedrobust.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto``: the first CUDA device when torch sees one, else the CPU; ``cuda`` (or ``cuda:N``) on a
    machine without CUDA is a configuration error, raised before any work starts."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(f"run.device: {name!r} but torch {torch.__version__} ({build}) sees no CUDA device; "
                              f"use run.device = \"auto\" or \"cpu\"")
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"run.device: {name!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device(name)


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer): where its inputs must go."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state dict on the CPU: what travels to Flower, aggregators and checkpoints."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
