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

from fedrobust.edge.metadata import INPUT_NAME, ModelMetadata
from fedrobust.edge.model import EdgeModel
from fedrobust.errors import FedrobustError
from fedrobust.predict import predicted, torch_logits


class ExportError(FedrobustError):
    """The exported model is not faithful to the torch model (or could not be written)."""


@dataclass(frozen=True)
class Parity:
    """torch vs onnxruntime on the same images."""

    images: int
    max_abs_diff: float
    same_predictions: bool  # every prediction (class, or mask pixel) agrees
    agreement: float = 1.0  # share of predictions that agree

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"images": self.images, "max_abs_diff": self.max_abs_diff, "same_predictions": self.same_predictions,
                "agreement": self.agreement}


def export_onnx(model: nn.Module, path: Path, meta: ModelMetadata) -> Path:
    """Write ``model`` (eval mode) to ``path`` as one ONNX file with ``meta`` in its metadata_props.

    Input ``images`` float32 (N, C, H, W) in [0, 1], N dynamic; output ``meta.output_name``: ``logits``
    (N, classes), or ``mask_logits`` (N, 1, H, W) for a segmentation model.
    """
    import onnx

    model = model.eval()
    example = torch.rand(2, meta.channels, meta.image_size, meta.image_size)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), dynamo=True, input_names=[INPUT_NAME],
                              output_names=[meta.output_name], dynamic_shapes=({0: torch.export.Dim("batch")},),
                              external_data=False, verbose=False)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for key, value in meta.to_props().items():
            proto.metadata_props.add(key=key, value=value)
        proto.doc_string = (f"fedrobust {meta.role} ({meta.model}) for {meta.dataset}: input '{INPUT_NAME}' "
                            f"float32 NCHW in [0, 1], output '{meta.output_name}'")
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_parity(model: nn.Module, path: Path, images: torch.Tensor, atol: float,
                 min_agreement: float = 1.0) -> tuple[Parity, np.ndarray]:
    """Compare torch and onnxruntime logits on ``images``; raise ExportError (and delete the file)
    if the largest difference exceeds ``atol`` or fewer than ``min_agreement`` of the predictions (classes,
    or binarised mask pixels) agree. Returns the onnxruntime logits too, so callers score them without a
    second pass."""
    expected = torch_logits(model, images).numpy()
    got = EdgeModel(path, threads=1).predict_logits(np.ascontiguousarray(images.numpy(), dtype=np.float32))
    diff = float(np.abs(expected - got).max())
    agree = float(np.mean(predicted(expected) == predicted(got)))
    if diff > atol or agree < min_agreement:
        path.unlink(missing_ok=True)
        raise ExportError(f"{path.name}: onnxruntime disagrees with torch on {len(images)} test images "
                          f"(max |logit diff| {diff:.2e}, allowed {atol:g}; predictions agree {agree:.2%}, "
                          f"required {min_agreement:.2%}); not exported")
    return Parity(len(images), diff, agree == 1.0, agree), got
