"""Make ``torchvision`` importable on the CPU build of torch.

torchvision 0.28's C++ extension is linked against the CUDA torch build. On the CPU build it
fails to load silently, after which torchvision registers fake kernels for the operators
``torchvision::nms`` / ``torchvision::qnms`` that were never defined, and ``import torchvision``
dies. We first try to load the real extension; only when that fails do we define the two
operator schemas ourselves (with a pure-torch CPU ``nms``). Every module of fedrobust that needs
torchvision imports it through :func:`import_torchvision`, so Ray workers and Flower
subprocesses get the fix too.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

import torch

_state: dict[str, object] = {"mode": None, "lib": None}


def _nms_cpu(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (reference semantics of ``torchvision.ops.nms``)."""
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    keep: list[int] = []
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = torch.maximum(x1[i], x1)
        yy1 = torch.maximum(y1[i], y1)
        xx2 = torch.minimum(x2[i], x2)
        yy2 = torch.minimum(y2[i], y2)
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas - inter)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def _extension_path() -> str | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "_C.so")
        if os.path.exists(path):
            return path
    return None


def ensure_torchvision_ops() -> str:
    """Prepare the ``torchvision`` operator namespace; return how: 'native', 'shim' or 'loaded'.

    Idempotent and cheap after the first call. Must run before the first torchvision import.
    """
    if _state["mode"] is not None:
        return str(_state["mode"])
    if "torchvision" in sys.modules:
        _state["mode"] = "loaded"
        return "loaded"
    path = _extension_path()
    try:
        if path is None:
            raise OSError("torchvision extension not found")
        torch.ops.load_library(path)
        torch.ops.torchvision.nms  # noqa: B018 - raises if the op is not really there
        _state["mode"] = "native"
    except (OSError, RuntimeError, AttributeError):
        lib = torch.library.Library("torchvision", "DEF")  # kept alive in _state
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl("nms", _nms_cpu, "CPU")
        _state["lib"] = lib
        _state["mode"] = "shim"
    return str(_state["mode"])


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module, importable on CPU torch."""
    ensure_torchvision_ops()
    import torchvision

    return torchvision
