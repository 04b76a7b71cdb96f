"""Reading a finished run back: its resolved config and the model it selected (model.pt)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedrobust.config import ExperimentConfig, load_config
from fedrobust.errors import FedrobustError
from fedrobust.models.from_config import model_for
from fedrobust.rundir import RunDir


def run_config(run: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The config a run was made with (its config.toml), plus ``overrides``."""
    run = Path(run)
    if not (run / RunDir.CONFIG).is_file():
        raise FedrobustError(f"{run} is not a fedrobust run directory (no {RunDir.CONFIG}); "
                             f"pass a folder made by `fedrobust train` or `fedrobust simulate`")
    return load_config(run / RunDir.CONFIG, overrides)


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FedrobustError(f"{path} not found; the run has not finished (no final model), "
                             f"finish or resume it first")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise FedrobustError(f"{path} is not a readable checkpoint ({type(exc).__name__}); re-run the step "
                             f"that wrote it") from None


def load_model(cfg: ExperimentConfig, path: Path, name: str | None = None,
               saved: dict[str, Any] | None = None) -> nn.Module:
    """Build ``name`` (default: the run's ``[model]``) and load the ``"model"`` weights saved in ``path``
    (``saved``: that file's contents, when the caller has already read it)."""
    saved = saved if saved is not None else load_state(path)
    model = model_for(cfg, name)
    try:
        model.load_state_dict(saved["model"])
    except (KeyError, RuntimeError) as exc:
        raise FedrobustError(f"{path} does not hold {name or cfg.model.name} weights for this config "
                             f"({str(exc).splitlines()[0][:120]})") from None
    return model.eval()


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes: ties an exported file to exact weights."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()
