"""Load a MedMNIST split through the official ``medmnist`` package as float tensors.

Root resolution: explicit argument (CLI flag / config) > ``$FEDROBUST_DATA_ROOT`` > medmnist's
default ``~/.medmnist``. A missing file is downloaded by medmnist when the network allows. The
file's MD5 is checked against ``medmnist.INFO`` before use, so a truncated or tampered file is
never used silently.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedrobust.data.catalog import DatasetInfo, dataset_info, size_suffix
from fedrobust.errors import DataError

ENV_ROOT = "FEDROBUST_DATA_ROOT"
SPLITS = ("train", "val", "test")
_md5_ok: set[tuple[str, int, int]] = set()  # (path, size, mtime) already verified this process


@dataclass
class ImageSplit:
    """One split in memory: images N x C x H x W float32 in [0, 1] and labels N (int64)."""

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def targets(self) -> torch.Tensor:
        return self.labels

    def subset(self, indices: np.ndarray | list[int]) -> ImageSplit:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageSplit(self.images[idx], self.labels[idx], self.info, self.split)


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root in order of precedence: argument, environment, medmnist's default."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser()
    return Path("~/.medmnist").expanduser()


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify_md5(path: Path, expected: str) -> None:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _md5_ok:
        return
    got = _md5(path)
    if got != expected:
        raise DataError(
            f"{path}: MD5 {got} does not match the official {expected}; the file is corrupt or "
            f"not the official release: delete it to re-download, or set data.verify_md5 = false "
            f"if it is your own file"
        )
    _md5_ok.add(key)


def _ensure_file(flag: str, root: Path, download: bool, size: int = 28) -> Path:
    path = root / f"{flag}{size_suffix(size)}.npz"
    if path.is_file():
        return path
    fix = f"put the official {path.name} in {root}, or point --data-root / ${ENV_ROOT} at a folder holding it"
    if not download:
        raise DataError(f"{path} not found and download is off: {fix}")
    from fedrobust.tvcompat import ensure_torchvision_ops

    ensure_torchvision_ops()  # medmnist downloads through torchvision.datasets.utils
    import medmnist

    root.mkdir(parents=True, exist_ok=True)
    cls = getattr(medmnist, medmnist.INFO[flag]["python_class"])
    try:
        cls(split="train", root=str(root), download=True, size=size)
    except Exception:  # medmnist wraps every failure in a multi-line RuntimeError
        if path.exists():  # never leave a half-downloaded file behind
            path.unlink()
        raise DataError(f"{path} not found and the download failed (no network?): {fix}") from None
    return path


def _to_tensor(images: np.ndarray, channels: int, as_rgb: bool, image_size: int) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:  # grey: N x H x W
        x = x.unsqueeze(1)
    elif x.ndim == 4:  # RGB: N x H x W x C
        x = x.permute(0, 3, 1, 2)
    else:
        raise DataError(f"unexpected image array of shape {tuple(images.shape)}; expected N x H x W (x C)")
    if x.shape[1] != channels:
        raise DataError(f"images have {x.shape[1]} channels, medmnist.INFO says {channels}")
    x = x.float().div_(255.0)
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=True).clamp_(0.0, 1.0)
    if as_rgb and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # a view: no copy until a batch is taken
    return x


def load_split(
    flag: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    image_size: int = 28,
    as_rgb: bool = False,
    download: bool = True,
    verify_md5: bool = True,
    size: int = 28,
) -> ImageSplit:
    """Load ``split`` of MedMNIST ``flag`` as float tensors in [0, 1], N x C x H x W.

    The official ``medmnist`` dataset class opens the file; fedrobust reads its arrays.
    """
    info = dataset_info(flag)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    data_root = resolve_data_root(root)
    if data_root.exists() and not data_root.is_dir():
        raise DataError(f"data root {data_root} is a file, not a folder; pass a folder to --data-root")
    if size not in info.md5s:
        raise DataError(f"MedMNIST+ has no {size} px {flag}; choose data.size from "
                        f"{', '.join(map(str, sorted(info.md5s)))}")
    path = _ensure_file(flag, data_root, download, size)
    if verify_md5:
        _verify_md5(path, info.md5s[size])
    import medmnist

    cls = getattr(medmnist, medmnist.INFO[flag]["python_class"])
    try:
        ds = cls(split=split, root=str(data_root), download=False, size=size)
        images, labels = np.asarray(ds.imgs), np.asarray(ds.labels)
    except (zipfile.BadZipFile, ValueError, OSError, KeyError, EOFError) as exc:
        raise DataError(
            f"{path}: not a readable MedMNIST npz ({type(exc).__name__}); delete it and re-download "
            f"the official file"
        ) from None
    return _as_split(path, images, labels, info, split, image_size, as_rgb)


def _as_split(path: Path, images: np.ndarray, labels: np.ndarray, info: DatasetInfo, split: str, image_size: int,
              as_rgb: bool) -> ImageSplit:
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{path}: {split} has {images.shape[0]} images but {labels.shape[0]} labels")
    y = torch.from_numpy(labels.reshape(labels.shape[0], -1)[:, 0].astype(np.int64))
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
        raise DataError(f"{path}: labels outside 0..{info.num_classes - 1} in the {split} split")
    x = _to_tensor(images, info.channels, as_rgb, image_size)
    return ImageSplit(images=x, labels=y, info=info, split=split)


def load_own_file(path: str | os.PathLike, flag: str, split: str, *, image_size: int = 28,
                  as_rgb: bool = False) -> ImageSplit:
    """A split of a node's own dataset file: an .npz with MedMNIST's keys (``train_images``,
    ``train_labels``, ...) and ``flag``'s image format and classes. Used whole, not partitioned;
    there is no official checksum to verify it against."""
    info = dataset_info(flag)
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; pass the node's own .npz with --data-file")
    try:
        with np.load(path) as npz:
            keys = set(npz.files)
            if f"{split}_images" not in keys or f"{split}_labels" not in keys:
                raise DataError(f"{path} has no {split}_images/{split}_labels arrays (it has "
                                f"{', '.join(sorted(keys)) or 'none'}); write it with MedMNIST's keys")
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    return _as_split(path, images, labels, info, split, image_size, as_rgb)


def load_from_config(data_cfg, split: str) -> ImageSplit:
    """Load a split as the ``[data]`` config section describes."""
    return load_split(
        data_cfg.dataset,
        split,
        data_cfg.root or None,
        image_size=data_cfg.image_size,
        as_rgb=data_cfg.as_rgb,
        download=data_cfg.download,
        verify_md5=data_cfg.verify_md5,
        size=data_cfg.size,
    )
