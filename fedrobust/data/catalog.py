"""What fedrobust knows about each MedMNIST flag, read from ``medmnist.INFO``.

Supported: every single-label 2D set (binary, multi-class, and ordinal-regression treated as
multi-class, as the MedMNIST benchmark does). Unsupported, with a clear error: the multi-label
ChestMNIST (its loss, metrics and attacks differ) and the 3D volumes.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedrobust.errors import DataError

FILE_SIZES = (28, 64, 128, 224)  # MedMNIST+: every 2D set at these sizes, {flag}.npz and {flag}_{size}.npz


def _info_table() -> dict:
    from medmnist.info import INFO  # imports only the metadata, not torch datasets

    return INFO


@dataclass(frozen=True)
class DatasetInfo:
    """The metadata a model and an evaluator need."""

    flag: str
    task: str
    channels: int
    num_classes: int
    class_names: tuple[str, ...]
    md5s: dict[int, str]  # official MD5 per file size (medmnist.INFO's MD5, MD5_64, ...)
    n_samples: dict

    @property
    def md5(self) -> str:
        return self.md5s[28]

    @property
    def medmnist_task(self) -> str:
        """Task string for medmnist's getACC/getAUC (ordinal regression scored as multi-class)."""
        return "binary-class" if self.task == "binary-class" else "multi-class"


def size_suffix(size: int) -> str:
    """medmnist's file-name suffix: "" for the 28 px file, "_64" for ``{flag}_64.npz`` and so on."""
    return "" if size == 28 else f"_{size}"


def supported_flags() -> list[str]:
    """Every MedMNIST flag fedrobust can train on, sorted."""
    info = _info_table()
    return sorted(k for k in info if _unsupported_reason(k, info[k]) is None)


def check_supported_flag(flag: str) -> None:
    """Raise DataError naming the problem if ``flag`` is not a supported 2D single-label set."""
    info = _info_table()
    if flag not in info:
        raise DataError(f"unknown MedMNIST flag {flag!r}; supported: {', '.join(supported_flags())}")
    reason = _unsupported_reason(flag, info[flag])
    if reason:
        raise DataError(f"{flag} is not supported: {reason}")


def _unsupported_reason(flag: str, entry: dict) -> str | None:
    if flag.endswith("3d"):
        return "3D volumes are out of scope; use a 2D MedMNIST set such as breastmnist"
    if entry["task"].startswith("multi-label"):
        return "multi-label tasks need per-label losses and metrics; use a single-label set"
    return None


def dataset_info(flag: str) -> DatasetInfo:
    """Metadata of a supported flag."""
    check_supported_flag(flag)
    entry = _info_table()[flag]
    labels = entry["label"]
    names = tuple(labels[str(i)] for i in range(len(labels)))
    return DatasetInfo(
        flag=flag,
        task=entry["task"],
        channels=int(entry["n_channels"]),
        num_classes=len(names),
        class_names=names,
        md5s={s: entry[f"MD5{size_suffix(s)}"] for s in FILE_SIZES if f"MD5{size_suffix(s)}" in entry},
        n_samples=dict(entry["n_samples"]),
    )
