"""What a config may say for each task, as plain data: checked at config load without loading torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedrobust.config.schema import SWEEP_ATTACKS, DataSection
from fedrobust.errors import ConfigError


def _check_medmnist(d: DataSection) -> None:
    from fedrobust.data.catalog import FILE_SIZES, check_supported_flag  # local: medmnist loads only when checking

    try:
        check_supported_flag(d.dataset)
    except Exception as exc:
        raise ConfigError(f"data.dataset: {exc}") from None
    if d.size not in FILE_SIZES:
        raise ConfigError(f"data.size: got {d.size!r}; choose one of {', '.join(map(str, FILE_SIZES))}")
    if not 8 <= d.image_size <= 224:
        raise ConfigError(f"data.image_size: must be in [8, 224], got {d.image_size}")


def _medmnist_classes(d: DataSection) -> int:
    from fedrobust.data.catalog import dataset_info

    return dataset_info(d.dataset).num_classes


def _check_mask_folder(d: DataSection) -> None:
    if not d.dataset or "/" in d.dataset:
        raise ConfigError(f"data.dataset: names the data set's folder under the segmentation root (e.g. "
                          f"kvasir-seg), got {d.dataset!r}")
    if not (16 <= d.image_size <= 1024 and d.image_size % 16 == 0):
        raise ConfigError(f"data.image_size: must be a multiple of 16 in [16, 1024] for the UNet (e.g. 128 as "
                          f"the paper, 256 native), got {d.image_size}")
    if d.as_rgb:
        raise ConfigError("data.as_rgb: segmentation images are RGB already; leave it false")


@dataclass(frozen=True)
class TaskSpec:
    """The choices and defaults of one task (``data.task``)."""

    name: str
    model_kind: str  # the registry kind its models must have ("classifier" / "segmenter")
    schemes: tuple[str, ...]  # partition.scheme
    metrics: tuple[str, ...]  # what score() returns besides the loss; "val_<metric>" selects on it
    headline: str  # the metric sweeps, tables and "val_fgsm" report
    attacks: tuple[str, ...]  # sweep.attacks it supports
    columns: dict[str, str]  # sweep.csv column -> metric, headline first
    label: str  # the headline metric for people, e.g. "accuracy"
    short: str  # ... in a table header, e.g. "ACC"
    check_data: Callable[[DataSection], None]  # raises ConfigError on a bad [data] section
    root_env: str  # the environment variable that names the data root when data.root is ""
    worst_case: str  # what the sweep's autoattack is, for people (its attacks: Task.worst_case)
    classes: Callable[[DataSection], int] | None = None  # how many classes the labels have; None: not labels
    defaults: dict[str, Any] = field(default_factory=dict)  # "section.key" -> value, for keys a config leaves out

    @property
    def column(self) -> str:
        """The sweep.csv column of the headline metric."""
        return next(c for c, m in self.columns.items() if m == self.headline)

    @property
    def selects(self) -> tuple[str, ...]:
        """Values of train.select / federation.select: a val metric, FGSM on val, or the newest."""
        return (*(f"val_{m}" for m in self.metrics), "val_fgsm", "last")


CLASSIFICATION = TaskSpec(
    name="classification", model_kind="classifier", schemes=("iid", "dirichlet", "shards"),
    metrics=("acc", "auc"), headline="acc", attacks=tuple(a for a in SWEEP_ATTACKS if a != "apgd-loss"),
    columns={"accuracy": "acc", "auc": "auc"}, label="accuracy", short="ACC",
    check_data=_check_medmnist, root_env="FEDROBUST_DATA_ROOT",
    worst_case="per image, the worst of FGSM, PGD, APGD-CE, APGD-DLR or margin APGD, Square", classes=_medmnist_classes,
)

# The paper's size (128 px, UNet) and eps grid; the Kvasir-SEG folder under the segmentation root.
SEGMENTATION = TaskSpec(
    name="segmentation", model_kind="segmenter", schemes=("iid", "quantity", "dirichlet"),
    metrics=("iou", "dice", "miou"), headline="iou",
    attacks=tuple(a for a in SWEEP_ATTACKS if a not in ("square", "apgd-ce", "apgd-dlr", "apgd-margin")),
    columns={"iou": "iou", "dice": "dice", "miou": "miou"}, label="polyp IoU", short="IoU",
    check_data=_check_mask_folder, root_env="FEDROBUST_SEG_ROOT",
    worst_case="per image, the lowest of FGSM, PGD, apgd-loss",
    defaults={
        "data.dataset": "kvasir-seg", "data.image_size": 128, "model.name": "unet",
        "distill.student": "unet_student", "train.select": "val_iou", "train.batch_size": 16,
        "eval.batch_size": 32, "eval.fgsm_eps": [0.0012, 0.0118, 0.1176], "federation.eval_eps": 0.0118,
        "sweep.eps": sorted([0.0012, 0.0118, 0.1176, 1 / 255, 2 / 255, 4 / 255, 8 / 255]),
        "sweep.attacks": ["fgsm", "pgd", "invfgsm", "noise", "transfer-fgsm", "transfer-pgd"],
        "export.calibration_size": 64,
    },
)

SPECS = {s.name: s for s in (CLASSIFICATION, SEGMENTATION)}
