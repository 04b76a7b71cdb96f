"""EdgeModel: an exported fedrobust ONNX model, run with onnxruntime on the CPU.

Loading checks the file against its own fedrobust metadata (input/output names, channels,
image size, class count), so a model that would mispredict or crash fails at load with one
line; every input batch is checked before it reaches onnxruntime for the same reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from fedrobust.edge.images import EdgeError, validate_batch
from fedrobust.edge.metadata import MetadataError, ModelMetadata
from fedrobust.edge.scores import softmax

__all__ = ["EdgeError", "EdgeModel", "Prediction", "softmax"]


class Prediction(NamedTuple):
    """``labels`` (N,) int64 argmax classes; ``probabilities`` (N, num_classes) float32 softmax."""

    labels: np.ndarray
    probabilities: np.ndarray


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shape(arg: Any) -> list[int | str | None]:
    return [d if isinstance(d, int | str) or d is None else str(d) for d in arg.shape]


class EdgeModel:
    """A fedrobust ONNX model plus its metadata, ready to predict on (N, C, H, W) float32 batches.

    The onnxruntime session is configured on purpose rather than left to defaults, because an
    edge device serves one request at a time and wants predictable latency more than peak
    throughput: ``threads`` intra-op threads (default 1: no thread pool contending with the rest
    of the device; 0 lets onnxruntime pick one per core), a single inter-op thread and
    sequential execution (the graph is a chain, parallel branches buy nothing), and every graph
    optimisation (constant folding, fusions) since they cost only load time. CPU provider only:
    the result must not depend on what accelerator happens to be installed.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 1) -> None:
        self.path = Path(path)
        if threads < 0:
            raise EdgeError(f"threads must be >= 0 (0 = let onnxruntime choose), got {threads}")
        if not self.path.exists():
            raise EdgeError(f"{self.path}: no such model file")
        if not self.path.is_file():
            raise EdgeError(f"{self.path} is not a file")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: load-time warnings would clutter a CLI's stderr
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's pybind errors share no useful base class
            raise EdgeError(f"{self.path} is not a valid ONNX model ({_first_line(exc)})") from None
        props = self._session.get_modelmeta().custom_metadata_map
        try:
            self._metadata = ModelMetadata.from_props(props, source=str(self.path))
        except MetadataError as exc:
            raise EdgeError(str(exc)) from exc
        self._check_graph()

    def _check_graph(self) -> None:
        """Fail at load, not at the first predict, if the graph disagrees with its metadata."""
        meta, where = self._metadata, str(self.path)
        if meta.task.startswith("multi-label"):
            raise EdgeError(f"{where}: multi-label models are not supported (softmax over labels would be wrong)")
        norm = meta.normalization
        if any(m != 0 for m in norm.get("mean", [])) or any(sd != 1 for sd in norm.get("std", [])):
            raise EdgeError(f"{where}: metadata asks for mean/std normalisation {norm}, but fedrobust models take "
                            f"[0, 1] pixels directly; re-export the model with fedrobust")
        inputs = {arg.name: arg for arg in self._session.get_inputs()}
        outputs = {arg.name: arg for arg in self._session.get_outputs()}
        if meta.input_name not in inputs:
            raise EdgeError(f"{where}: metadata names input {meta.input_name!r} but the graph's inputs are "
                            f"{', '.join(inputs) or 'none'}; re-export the model")
        if len(inputs) != 1:
            raise EdgeError(f"{where}: graph has {len(inputs)} inputs ({', '.join(inputs)}); expected only "
                            f"{meta.input_name!r}")
        if meta.output_name not in outputs:
            raise EdgeError(f"{where}: metadata names output {meta.output_name!r} but the graph's outputs are "
                            f"{', '.join(outputs) or 'none'}; re-export the model")
        arg = inputs[meta.input_name]
        if arg.type != "tensor(float)":
            raise EdgeError(f"{where}: input {arg.name!r} is {arg.type}, expected tensor(float)")
        want: list[int | None] = [None, meta.channels, meta.image_size, meta.image_size]
        if len(arg.shape) != 4 or any(isinstance(g, int) and w is not None and g != w
                                      for g, w in zip(arg.shape, want, strict=True)):
            raise EdgeError(f"{where}: input {arg.name!r} has shape {_shape(arg)} but metadata says "
                            f"(N, {meta.channels}, {meta.image_size}, {meta.image_size}); re-export the model")
        out_shape = outputs[meta.output_name].shape
        want_out = meta.output_shape(0)
        if len(out_shape) != len(want_out) or any(isinstance(g, int) and g != w
                                                  for g, w in zip(out_shape[1:], want_out[1:], strict=True)):
            expected = (f"(N, 1, {meta.image_size}, {meta.image_size}) mask logits" if meta.is_mask
                        else f"{meta.num_classes} classes")
            raise EdgeError(f"{where}: output {meta.output_name!r} has shape {_shape(outputs[meta.output_name])} "
                            f"but metadata says {expected}; re-export the model")

    @property
    def metadata(self) -> ModelMetadata:
        """The fedrobust metadata stored in the file (dataset, classes, input size, ...)."""
        return self._metadata

    @property
    def session(self) -> ort.InferenceSession:
        """The underlying onnxruntime session, for callers that need more than predict."""
        return self._session

    def io_info(self) -> dict[str, list[dict[str, Any]]]:
        """Graph inputs and outputs (name, type, shape; dynamic dims as names) as plain data."""
        def describe(args: list[Any]) -> list[dict[str, Any]]:
            return [{"name": a.name, "type": a.type, "shape": _shape(a)} for a in args]
        return {"inputs": describe(self._session.get_inputs()), "outputs": describe(self._session.get_outputs())}

    def predict_logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, C, H, W) float32 in [0, 1] -> (N, num_classes) float32 logits ((N, 1, H, W) for a mask model).

        Runs ``batch_size`` images at a time, so peak memory is bounded by the batch rather
        than by N; results do not depend on ``batch_size``.
        """
        if batch_size < 1:
            raise EdgeError(f"batch_size must be >= 1, got {batch_size}")
        meta = self._metadata
        lo, hi = meta.value_range
        validate_batch(x, meta.channels, meta.image_size, (float(lo), float(hi)))
        out = np.empty(meta.output_shape(len(x)), dtype=np.float32)
        for start in range(0, len(x), batch_size):
            batch = np.ascontiguousarray(x[start:start + batch_size])
            (logits,) = self._session.run([meta.output_name], {meta.input_name: batch})
            if logits.shape != meta.output_shape(len(batch)):
                raise EdgeError(f"{self.path}: model returned logits of shape {logits.shape}, expected "
                                f"{meta.output_shape(len(batch))}; re-export the model")
            out[start:start + len(batch)] = logits
        return out

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, C, H, W) -> (N, num_classes) class probabilities (softmax of the logits)."""
        return softmax(self.predict_logits(x, batch_size))

    def predict(self, x: np.ndarray, batch_size: int = 256) -> Prediction:
        """(N, C, H, W) -> Prediction(labels, probabilities); labels index ``metadata.class_names``."""
        proba = self.predict_proba(x, batch_size)
        return Prediction(proba.argmax(axis=1).astype(np.int64), proba)

    def __repr__(self) -> str:
        meta = self._metadata
        return (f"EdgeModel({str(self.path)!r}, dataset={meta.dataset!r}, model={meta.model!r}, "
                f"precision={meta.precision!r}, input=(N, {meta.channels}, {meta.image_size}, {meta.image_size}))")
