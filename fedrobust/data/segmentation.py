"""Load a binary segmentation data set (Kvasir-SEG polyps) as float image and mask tensors.

Layout: a folder with ``images/`` and ``masks/`` whose files (PNG or JPEG, any case of extension)
pair up by file stem, e.g. ``images/cju0qkwl35piu0993l0dewei2.png`` and ``masks/cju0qkwl35piu0993l0dewei2.png``.
Files whose name starts with ``.`` (macOS ``._x.png`` side files) and other extensions are ignored.

Root resolution: explicit argument (CLI flag / config) > ``$FEDROBUST_SEG_ROOT`` > ``~/.fedrobust/segmentation``.
The data set folder is ``<root>/kvasir-seg`` if that exists, else ``<root>`` itself if it directly holds
``images/`` and ``masks/``, so any folder in that layout can be pointed at.

Kvasir-SEG has no official split: :func:`split_names` gives a fixed one by hashing each file name, the same on
every machine and independent of the order the file system lists files in. Only the requested split's files
are decoded (and checked), so a bad file in another split is reported when that split is loaded.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedrobust.errors import ConfigError, DataError

ENV_SEG_ROOT = "FEDROBUST_SEG_ROOT"
DEFAULT_SEG_ROOT = "~/.fedrobust/segmentation"
DATASET_DIR = "kvasir-seg"
SPLITS = ("train", "val", "test")
FRACTIONS = (0.8, 0.1, 0.1)
EXTENSIONS = (".png", ".jpg", ".jpeg")
UNET_MULTIPLE = 16  # a 4-level UNet halves the size 4 times

# A mask is two-valued if at most this share of its grey pixels lies strictly between these values: JPEG masks
# carry a thin band of compression noise along the edges, a photo or a soft (probability) mask does not pass.
GREY_LOW, GREY_HIGH, GREY_MAX_SHARE = 32, 223, 0.01
MASK_THRESHOLD = 127  # grey > 127 is foreground, as in the Kvasir-SEG conversion (SOURCES.md)
_CHUNK_PIXELS = 1 << 22  # decode and resize about this many pixels at once (48 MB as float RGB)
_EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")


@dataclass
class MaskSplit:
    """One split in memory: images N x 3 x H x W float32 in [0, 1], masks N x 1 x H x W float32 of 0.0/1.0,
    and the file stems in the same order (to trace a prediction back to its file)."""

    images: torch.Tensor
    masks: torch.Tensor
    names: list[str]
    split: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def targets(self) -> torch.Tensor:
        return self.masks

    def subset(self, indices: np.ndarray | list[int]) -> MaskSplit:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        t = torch.as_tensor(idx)
        return MaskSplit(self.images[t], self.masks[t], [self.names[i] for i in idx.tolist()], self.split)


# ------------------------------------------------------------------------------------------------ folders


def _base_root(root: str | os.PathLike | None) -> Path:
    if root:
        return Path(root).expanduser()
    env = os.environ.get(ENV_SEG_ROOT)
    if env:
        return Path(env).expanduser()
    return Path(DEFAULT_SEG_ROOT).expanduser()


def _has_layout(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir()


def resolve_seg_root(root: str | os.PathLike | None = None, dataset: str = DATASET_DIR) -> Path:
    """The data set folder: ``<root>/<dataset>`` if it exists, else ``<root>`` if it holds ``images/`` and
    ``masks/``, else ``<root>/<dataset>`` (where the loader then reports it missing). ``root`` in order of
    precedence: argument, ``$FEDROBUST_SEG_ROOT``, ``~/.fedrobust/segmentation``."""
    base = _base_root(root)
    nested = base / dataset
    if nested.is_dir() or not _has_layout(base):
        return nested
    return base


def _check_folder(root: str | os.PathLike | None, dataset: str = DATASET_DIR) -> Path:
    base = _base_root(root)
    folder = resolve_seg_root(root, dataset)
    fix = f"point the root argument or ${ENV_SEG_ROOT} at a folder holding images/ and masks/"
    if base.exists() and not base.is_dir():
        raise DataError(f"segmentation root {base} is a file, not a folder; {fix}")
    if not folder.is_dir() and ((base / "images").is_dir() or (base / "masks").is_dir()):
        folder = base  # a half layout at the root itself: report what it lacks below
    if not folder.is_dir():
        raise DataError(f"no segmentation data set at {base}: neither {folder} nor {base}/images and "
                        f"{base}/masks exist; {fix}")
    missing = [sub for sub in ("images", "masks") if not (folder / sub).is_dir()]
    if missing:
        raise DataError(f"{folder} has no {' and no '.join(f'{m}/' for m in missing)} folder; a segmentation data "
                        f"set needs images/ and masks/ with matching file names")
    return folder


def _scan(sub: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    try:
        listing = sorted(sub.iterdir())
    except OSError as exc:
        raise DataError(f"cannot list {sub} ({type(exc).__name__}); it must be a readable folder of images") from None
    for path in listing:
        if path.name.startswith(".") or path.suffix.lower() not in EXTENSIONS or not path.is_file():
            continue
        if path.stem in found:
            raise DataError(f"{sub} has both {found[path.stem].name} and {path.name} for the name {path.stem!r}; "
                            f"keep one of them")
        found[path.stem] = path
    return found


def scan_pairs(folder: str | os.PathLike) -> dict[str, tuple[Path, Path]]:
    """Image and mask file per stem, sorted by stem; refuses an image without a mask and a mask without an image,
    since a silently dropped pair would change the split."""
    folder = Path(folder)
    images, masks = _scan(folder / "images"), _scan(folder / "masks")
    if not images:
        raise DataError(f"{folder / 'images'} holds no PNG or JPEG files; put the images there "
                        f"(masks/ holds {len(masks)})")
    for have, lack, what, other in ((images, masks, "image", "mask"), (masks, images, "mask", "image")):
        alone = sorted(set(have) - set(lack))
        if len(alone) == 1:
            raise DataError(f"{have[alone[0]]} has no {other} of the same name in {folder / (other + 's')}; add "
                            f"its {other} or remove the {what}")
        if alone:
            raise DataError(f"{len(alone)} {what}s have no {other} of the same name in {folder / (other + 's')}, "
                            f"the first is {have[alone[0]]}; add their {other}s or remove those {what}s")
    return {stem: (images[stem], masks[stem]) for stem in sorted(images)}


# ------------------------------------------------------------------------------------------------- split


def _unit_hash(name: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _split(names: list[str], seed: int, fractions: tuple[float, float, float], where: str) -> dict[str, list[str]]:
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions: need three non-negative shares (train, val, test) summing to 1, "
                          f"got {tuple(fractions)}")
    cuts = np.cumsum(fractions)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for name in sorted(names):
        u = _unit_hash(name, seed)
        out[SPLITS[min(int(np.searchsorted(cuts, u, side="right")), len(SPLITS) - 1)]].append(name)
    for split, frac in zip(SPLITS, fractions, strict=True):
        if frac > 0 and not out[split]:
            sizes = "/".join(str(len(out[s])) for s in SPLITS)
            raise DataError(f"{where}the {split} split is empty: the folder has {len(names)} images, which split "
                            f"{sizes} (train/val/test); use a folder of about {int(np.ceil(3 / frac))} or more images")
    return out


def split_names(names: list[str], seed: int = 0,
                fractions: tuple[float, float, float] = FRACTIONS) -> dict[str, list[str]]:
    """Assign each (unique) name to train/val/test by sha256 of ``f"{seed}:{name}"`` read as a number in [0, 1)
    against the cumulative ``fractions``; each list is sorted.

    A name's split depends on the name and seed only: it is the same on every machine, in any listing order,
    and adding images never moves an existing one to another split (so test images never leak into training).
    """
    return _split(list(names), seed, tuple(fractions), "")


# ---------------------------------------------------------------------------------------------- decoding


def _read(path: Path, mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in _EIGHT_BIT_MODES:
                raise DataError(f"{path} has pixel mode {img.mode}, not 8-bit; save it as an 8-bit PNG or JPEG")
            return np.array(img.convert(mode))
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError: OSError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path} is not a readable image ({reason}); replace or remove it") from None


def _binary_mask(grey: np.ndarray, path: Path) -> np.ndarray:
    share = float(((grey > GREY_LOW) & (grey < GREY_HIGH)).mean())
    if share > GREY_MAX_SHARE:
        raise DataError(f"{path} is not a two-valued mask: {share:.1%} of its pixels are grey (between {GREY_LOW} "
                        f"and {GREY_HIGH}), at most {GREY_MAX_SHARE:.0%} allowed; save masks as black 0 / white 255")
    fg = grey > MASK_THRESHOLD
    if not fg.any() and int(grey.max()) == 1 and float((grey == 1).mean()) > 0.001:
        raise DataError(f"{path} holds the values 0 and 1, not 0 and 255, so it would read as empty; "
                        f"save masks as black 0 / white 255")
    return fg


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _read_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    rgb = _read(image_path, "RGB")
    grey = _read(mask_path, "L")
    if rgb.shape[:2] != grey.shape[:2]:
        raise DataError(f"{image_path} is {rgb.shape[1]}x{rgb.shape[0]} but its mask {mask_path} is "
                        f"{grey.shape[1]}x{grey.shape[0]}; an image and its mask must be the same size")
    return rgb, _binary_mask(grey, mask_path)


def _convert(rgbs: list[np.ndarray], fgs: list[np.ndarray], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Same-sized decoded pairs -> resized float tensors, as one batch (per-image calls are slow on a busy CPU)."""
    images = torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float().div_(255.0)
    masks = torch.from_numpy(np.stack(fgs)[:, None]).float()
    if images.shape[-2:] != (size, size):
        images = _resize(images, size).clamp_(0.0, 1.0)
        # Same filter and grid as the image, then majority: the mask stays binary and aligned with the image.
        masks = (_resize(masks, size) > 0.5).float()
    return images, masks


_Pair = tuple[str, Path, int, Path, int]  # stem, image, its mtime_ns, mask, its mtime_ns


@functools.lru_cache(maxsize=3)  # train/val/test at one size; train at 256 px is about 630 MB
def _load_cached(pairs: tuple[_Pair, ...], image_size: int, split: str) -> MaskSplit:
    n = len(pairs)
    images = torch.empty((n, 3, image_size, image_size), dtype=torch.float32)
    masks = torch.empty((n, 1, image_size, image_size), dtype=torch.float32)
    start = 0
    while start < n:  # a chunk of files at a time: never a full-resolution copy of the whole split
        stop, pixels, decoded = start, 0, []
        while stop < n and (stop == start or pixels < _CHUNK_PIXELS):
            rgb, fg = _read_pair(pairs[stop][1], pairs[stop][3])
            decoded.append((stop, rgb, fg))
            pixels += fg.size
            stop += 1
        by_shape: dict[tuple[int, int], list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for item in decoded:
            by_shape.setdefault(item[2].shape, []).append(item)
        for group in by_shape.values():
            idx = torch.as_tensor([i for i, _, _ in group])
            images[idx], masks[idx] = _convert([r for _, r, _ in group], [f for _, _, f in group], image_size)
        start = stop
    return MaskSplit(images=images, masks=masks, names=[p[0] for p in pairs], split=split)


def check_image_size(image_size: int) -> int:
    """Refuse a size the UNet cannot halve four times without remainder."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0 \
            or image_size % UNET_MULTIPLE:
        raise ConfigError(f"data.image_size: got {image_size!r}; it must be a positive multiple of {UNET_MULTIPLE} "
                          f"for the UNet (e.g. 64, 128 or 256)")
    return image_size


def load_seg_split(split: str, root: str | os.PathLike | None = None, *, image_size: int = 128,
                   seed: int = 0, dataset: str = DATASET_DIR) -> MaskSplit:
    """Load ``split`` (train/val/test of :func:`split_names`) resized to ``image_size`` square.

    Masks are read as grey and binarised at 127 (grey > 127 is polyp) at full resolution. A mask is refused
    if more than 1 % of its pixels lie strictly between 32 and 223 (not a black/white mask; JPEG edge noise
    stays far below that), and if it holds only 0/1 values. Images are resized bilinear with antialias; masks
    with the same filter and then thresholded at 0.5, so they stay binary and aligned with their images.
    Non-square files are stretched. Cached per process (up to 3 splits, keyed on the files, their
    modification times, size and split); the tensors are shared between calls: treat them as read-only.
    """
    check_image_size(image_size)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    folder = _check_folder(root, dataset).resolve()
    pairs = scan_pairs(folder)
    chosen = _split(list(pairs), seed, FRACTIONS, f"{folder}: ")[split]
    key = tuple((stem, pairs[stem][0], _mtime(pairs[stem][0]), pairs[stem][1], _mtime(pairs[stem][1]))
                for stem in chosen)
    return _load_cached(key, image_size, split)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        raise DataError(f"{path} vanished while loading; check that nothing else edits the folder") from None
