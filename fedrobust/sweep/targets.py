"""The models a sweep attacks, side by side: torch global model, torch student, ONNX fp32 and int8.

Every target answers the same two questions: its logits for a batch (through its own runtime:
torch or onnxruntime), and which torch model white-box gradients come from. For ONNX targets that
is the torch model they were exported from, so inputs crafted in torch are fed through
onnxruntime, exactly as an attacker holding the weights would do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedrobust.checkpoint import load_model
from fedrobust.config import ExperimentConfig
from fedrobust.distill.run import load_student
from fedrobust.edge.model import EdgeModel
from fedrobust.export.run import EXPORT_DIR
from fedrobust.predict import torch_logits

LABELS = {"global": "torch global model", "student": "torch student", "onnx_fp32": "ONNX fp32 student",
          "onnx_int8": "ONNX int8 student"}


@dataclass
class Target:
    name: str  # "global" | "student" | "onnx_fp32" | "onnx_int8"
    source: nn.Module  # torch model whose gradients white-box attacks use
    edge: EdgeModel | None = None  # onnxruntime runtime (ONNX targets)

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def logits(self, x: torch.Tensor) -> np.ndarray:
        """Logits of the target's own runtime for a float32 (N, C, H, W) batch in [0, 1]."""
        if self.edge is not None:
            return self.edge.predict_logits(np.ascontiguousarray(x.detach().numpy(), dtype=np.float32))
        return torch_logits(self.source, x).numpy()


def load_targets(cfg: ExperimentConfig, run_dir: Path) -> list[Target]:
    """The targets asked for in ``sweep.targets`` that this run has, in a fixed order."""
    wanted = set(cfg.sweep.targets)
    out: list[Target] = []
    teacher = load_model(cfg, run_dir / "model.pt")
    if "global" in wanted:
        out.append(Target("global", teacher))
    found = load_student(cfg, run_dir)
    if found is not None:
        student = found[1]
        if "student" in wanted:
            out.append(Target("student", student))
        for target, file in (("onnx_fp32", "student.onnx"), ("onnx_int8", "student.int8.onnx")):
            path = run_dir / EXPORT_DIR / file
            if target in wanted and path.is_file():
                out.append(Target(target, student, EdgeModel(path, threads=0)))
    return out


def teacher_of(targets: list[Target], cfg: ExperimentConfig, run_dir: Path) -> nn.Module:
    """The torch global model (transfer attacks are crafted on it)."""
    for t in targets:
        if t.name == "global":
            return t.source
    return load_model(cfg, run_dir / "model.pt")
