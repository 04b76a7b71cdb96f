"""What a fedrobust ONNX file says about itself: the contract between export and the edge.

Every value lives in the ONNX model's ``metadata_props`` under a ``fedrobust.`` key, as a
string (JSON for structured values). This module imports nothing but the standard library, so
the exporter (torch side) and the edge runtime (numpy + onnxruntime side) share it.

The model's single input is ``images``: float32, NCHW (batch, channels, height, width), batch
dynamic, values in [0, 1] (raw pixel / 255, no mean/std applied: ``normalization`` records the
affine map the network expects, identity for every fedrobust model). The single output is
``logits``: float32, (batch, number of classes), softmax gives probabilities; or, for a segmentation
model (``task`` "segmentation"), ``mask_logits``: float32, (batch, 1, height, width), one logit per pixel,
the pixel being foreground (``class_names[1]``) where the logit exceeds ``threshold`` (sigmoid > 0.5).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

PREFIX = "fedrobust."
FORMAT_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
SEGMENTATION = "segmentation"


class MetadataError(ValueError):
    """A model file lacks fedrobust metadata or carries values that do not fit together."""


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the edge needs to feed a model correctly and name its outputs."""

    dataset: str  # MedMNIST flag, e.g. "breastmnist", or the segmentation data set, e.g. "kvasir-seg"
    task: str  # medmnist task, e.g. "binary-class" or "multi-class", or "segmentation" (a binary mask)
    class_names: list[str]  # index -> human name (from medmnist INFO; background and foreground for masks)
    image_size: int  # height = width the network expects
    channels: int  # 1 (grey) or 3 (RGB)
    model: str  # registry name, e.g. "student" or "resnet18"
    role: str  # "student" or "teacher"
    precision: str  # "fp32" or "int8"
    weights_sha256: str  # SHA-256 of the torch weights the file was exported from
    normalization: dict[str, list[float]] = field(default_factory=dict)  # {"mean": [...], "std": [...]}
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    layout: str = "NCHW"
    value_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    run: str = ""  # run directory name the model came from
    format_version: int = FORMAT_VERSION
    threshold: float = 0.0  # segmentation: a pixel is foreground where its logit > threshold

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise MetadataError(f"channels must be 1 or 3, got {self.channels}")
        if self.image_size < 1:
            raise MetadataError(f"image_size must be positive, got {self.image_size}")
        if not self.class_names:
            raise MetadataError("class_names is empty")
        if not self.normalization:
            object.__setattr__(self, "normalization", {"mean": [0.0] * self.channels, "std": [1.0] * self.channels})

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_mask(self) -> bool:
        """A segmentation model: one logit per pixel instead of one per class."""
        return self.task == SEGMENTATION

    def output_shape(self, n: int) -> tuple[int, ...]:
        """The output's shape for a batch of ``n``."""
        return (n, 1, self.image_size, self.image_size) if self.is_mask else (n, self.num_classes)

    def to_props(self) -> dict[str, str]:
        """``{"fedrobust.<field>": str}`` for ``onnx.ModelProto.metadata_props``."""
        out = {}
        for key, value in asdict(self).items():
            out[PREFIX + key] = value if isinstance(value, str) else json.dumps(value)
        return out

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        """Parse ``metadata_props`` (e.g. onnxruntime's ``custom_metadata_map``)."""
        ours = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not ours:
            raise MetadataError(f"{source} has no fedrobust metadata; export it with `fedrobust export RUN_DIR`")
        names = {f for f in cls.__dataclass_fields__}
        missing = sorted(names - set(ours) - {"run", "format_version", "input_name", "output_name", "layout",
                                              "value_range", "normalization", "threshold"})
        if missing:
            raise MetadataError(f"{source}: fedrobust metadata lacks {', '.join(missing)}; re-export the model")
        kwargs: dict[str, Any] = {}
        for key, raw in ours.items():
            if key not in names:
                continue  # written by a newer fedrobust: ignore what we do not know
            hint = cls.__dataclass_fields__[key].type
            try:
                kwargs[key] = raw if hint == "str" else json.loads(raw)
            except json.JSONDecodeError:
                raise MetadataError(f"{source}: fedrobust.{key} is not valid JSON ({raw[:40]!r})") from None
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise MetadataError(f"{source}: fedrobust metadata does not fit ({exc})") from None
