"""Torch -> ONNX for the edge: one self-contained file, dynamic batch, metadata inside, and a
parity check that fails the export rather than shipping a model that disagrees with torch."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedrobust.edge.metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from fedrobust.errors import FedrobustError


class ExportError(FedrobustError):
    """The exported model is not faithful to the torch model (or could not be written)."""


@dataclass(frozen=True)
class Parity:
    """torch vs onnxruntime on the same images."""

    images: int
    max_abs_diff: float
    same_predictions: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"images": self.images, "max_abs_diff": self.max_abs_diff, "same_predictions": self.same_predictions}


def export_onnx(model: nn.Module, path: Path, meta: ModelMetadata) -> Path:
    """Write ``model`` (eval mode) to ``path`` as one ONNX file with ``meta`` in its metadata_props.

    Input ``images`` float32 (N, C, H, W) in [0, 1], N dynamic; output ``logits`` (N, classes).
    """
    import onnx

    model = model.eval()
    example = torch.rand(2, meta.channels, meta.image_size, meta.image_size)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), dynamo=True, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
                              external_data=False, verbose=False)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for key, value in meta.to_props().items():
            proto.metadata_props.add(key=key, value=value)
        proto.doc_string = (f"fedrobust {meta.role} ({meta.model}) for {meta.dataset}: input '{INPUT_NAME}' "
                            f"float32 NCHW in [0, 1], output '{OUTPUT_NAME}'")
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def ort_session(path: Path, threads: int = 1):
    """A CPU onnxruntime session with a fixed thread count (parity and accuracy runs)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_logits(session, images: torch.Tensor | np.ndarray, batch_size: int = 256) -> np.ndarray:
    x = images.numpy() if isinstance(images, torch.Tensor) else images
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)])


@torch.no_grad()
def torch_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    model.eval()
    return torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]).numpy()


def check_parity(model: nn.Module, path: Path, images: torch.Tensor, atol: float) -> tuple[Parity, np.ndarray]:
    """Compare torch and onnxruntime logits on ``images``; raise ExportError (and delete the file)
    if the largest difference exceeds ``atol`` or any predicted class differs. Returns the
    onnxruntime logits too, so callers score them without a second pass."""
    expected = torch_logits(model, images)
    got = ort_logits(ort_session(path), images)
    diff = float(np.abs(expected - got).max())
    same = bool((expected.argmax(1) == got.argmax(1)).all())
    if diff > atol or not same:
        path.unlink(missing_ok=True)
        raise ExportError(f"{path.name}: onnxruntime disagrees with torch on {len(images)} test images "
                          f"(max |logit diff| {diff:.2e} > {atol:g} or different classes: {not same}); "
                          f"not exported")
    return Parity(len(images), diff, same), got
