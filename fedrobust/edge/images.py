"""Turn image files and npz arrays into the model's input, and check arrays before they reach it.

The model takes float32 NCHW batches with values in [0, 1] (raw pixel / 255). Everything here
exists so that a wrong input fails with one clear sentence instead of a silent misprediction
or an onnxruntime shape error: files are converted and resized like the training pipeline,
arrays are only checked and rescaled (never silently resized). numpy and Pillow only.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PathLike = str | os.PathLike[str]

# Convert this many images at a time so a uint8 -> float32 conversion or a range check of a huge
# array never allocates more than one chunk of temporaries (the output itself is unavoidable).
_CHUNK = 1024
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


class EdgeError(ValueError):
    """A user error in the edge runtime: bad model file, bad input. The message is one line."""


def describe_channels(channels: int) -> str:
    """``"1 channel (grey)"`` / ``"3 channels (RGB)"``: how errors name a channel count."""
    kind = {1: " (grey)", 3: " (RGB)"}.get(channels, "")
    return f"{channels} channel{'s' if channels != 1 else ''}{kind}"


# ---------------------------------------------------------------------------- arrays for the model


def validate_batch(x: object, channels: int, size: int, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Check that ``x`` is exactly what the model takes; return it unchanged.

    Raises EdgeError naming what is wrong and how to fix it. Values are checked a chunk at a
    time so validating a huge array costs no more memory than one chunk.
    """
    expected = f"(N, {channels}, {size}, {size})"
    if not isinstance(x, np.ndarray):
        raise EdgeError(f"expected a numpy array of shape {expected}, got {type(x).__name__}")
    if x.dtype != np.float32:
        if np.issubdtype(x.dtype, np.floating):
            fix = "convert with x.astype(np.float32)"
        else:
            fix = "convert with x.astype(np.float32) / 255 for 8-bit images"
        raise EdgeError(f"expected float32, got {x.dtype}; {fix}")
    shape = tuple(x.shape)
    if x.ndim != 4:
        hint = ""
        if shape == (channels, size, size):
            hint = "; add a batch axis with x[None]"
        elif channels == 1 and x.ndim == 3 and shape[1:] == (size, size):
            hint = "; add a channel axis with x[:, None]"
        raise EdgeError(f"expected an array of shape {expected} (batch, channels, height, width), got {shape}{hint}")
    if shape[1] != channels:
        if shape[-1] == channels and shape[1:3] == (size, size):
            raise EdgeError(f"expected channels first {expected}, got channels last {shape}; "
                            "use x.transpose(0, 3, 1, 2)")
        raise EdgeError(f"model expects {describe_channels(channels)}, input has {shape[1]} "
                        f"(shape {shape}, expected {expected})")
    if shape[2:] != (size, size):
        raise EdgeError(f"model expects {size}x{size} images, input has {shape[2]}x{shape[3]} "
                        f"(shape {shape}); resize them first")
    lo, hi = value_range
    for start in range(0, shape[0], _CHUNK):
        chunk = x[start:start + _CHUNK]
        finite = np.isfinite(chunk)
        if not finite.all():
            first = start + int(np.argmin(finite.reshape(len(chunk), -1).all(axis=1)))
            raise EdgeError(f"input contains NaN or Inf (first in image {first})")
        cmin, cmax = float(chunk.min()), float(chunk.max())
        if cmin < lo or cmax > hi:
            raise EdgeError(f"input values must be in [{lo:g}, {hi:g}] (raw pixel / 255), got values from "
                            f"{cmin:g} to {cmax:g} in images {start}-{start + len(chunk) - 1}")
    return x


# ---------------------------------------------------------------------------------------- image files


def load_image(path: PathLike, channels: int, size: int) -> np.ndarray:
    """One image file -> (C, H, W) float32 in [0, 1], as the model expects it.

    Converted to grey ("L") or RGB to match ``channels`` (so an RGB photo works with a grey
    model and vice versa). 16-bit grey images are scaled by 65535, not clipped at 255. If the
    size differs, each band is resized as float with Pillow's bilinear filter, which is
    antialiased when downscaling: the same filter as training's
    ``F.interpolate(..., mode="bilinear", antialias=True)``. Non-square images are stretched.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgeError(f"{path}: no such image file" if not path.exists() else f"{path} is not a file")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)  # phone photos: honour the orientation tag
            return _image_to_array(img, channels, size, path)
    except EdgeError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgeError(f"{path} is not a readable image ({reason})") from None


def _image_to_array(img: Image.Image, channels: int, size: int, path: Path) -> np.ndarray:
    if img.mode.startswith("I;16"):  # 16-bit grey: Pillow's convert("L") would clip at 255
        bands = [Image.fromarray(np.asarray(img, dtype=np.float32) / 65535.0 * 255.0, mode="F")] * channels
    elif img.mode == "F":  # 32-bit float grey: read as pixels in [0, 1] (convert("L") would make them black)
        values = np.asarray(img, dtype=np.float32)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise EdgeError(f"{path} is a float image with values from {np.nanmin(values):g} to "
                            f"{np.nanmax(values):g}; fedrobust reads float images as pixels in [0, 1]: rescale "
                            f"it, or save it as an 8- or 16-bit image")
        bands = [Image.fromarray(values * 255.0, mode="F")] * channels
    elif img.mode.startswith("I"):  # 32-bit integers: no one range to scale by (convert("L") clips at 255)
        raise EdgeError(f"{path} is a 32-bit integer image (mode {img.mode}), whose value range is ambiguous; "
                        f"save it as an 8- or 16-bit image, or as float in [0, 1]")
    else:
        bands = list(img.convert("L" if channels == 1 else "RGB").split())
    if bands[0].size != (size, size):
        bands = [band.convert("F").resize((size, size), Image.BILINEAR) for band in bands]
    arr = np.stack([np.asarray(band, dtype=np.float32) for band in bands])
    arr /= 255.0
    return np.clip(arr, 0.0, 1.0, out=arr)  # bilinear on float can overshoot by rounding only


def as_8bit(x: np.ndarray) -> np.ndarray:
    """What an attacker who must send an 8-bit image (PNG) delivers: ``x`` rounded to grey levels, decoded
    as :func:`load_image` decodes an 8-bit file at the model's size (uint8 / 255 in float32)."""
    levels = np.clip(np.rint(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    return levels.astype(np.float32) / np.float32(255.0)


# ------------------------------------------------------------------------------------------- npz files


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise EdgeError(f"{path}: no such npz file" if not path.exists() else f"{path} is not a file")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise EdgeError(f"{path} is not a readable npz file ({str(exc).splitlines()[0] if str(exc) else exc!r})") \
            from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # a bare .npy loads as an array
        raise EdgeError(f"{path} is a .npy array, not an npz archive; save it with np.savez(path, images=x)")
    return data


def _read_member(data: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    try:
        return data[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise EdgeError(f"{path}: cannot read array {key!r} ({str(exc).splitlines()[0] if str(exc) else exc!r})") \
            from None


def npz_images_key(path: PathLike, key: str | None = None) -> str:
    """Which array of the npz holds the images: ``key`` if given, else "images", else "test_images"
    (the MedMNIST layout), else the only array; otherwise an error listing the keys."""
    path = Path(path)
    with _open_npz(path) as data:
        return _pick_key(data, path, key)


def _pick_key(data: np.lib.npyio.NpzFile, path: Path, key: str | None) -> str:
    keys = list(data.files)
    listing = ", ".join(keys) if keys else "none"
    if key is not None:
        if key not in keys:
            raise EdgeError(f"{path} has no array {key!r}; it has: {listing}")
        return key
    for default in ("images", "test_images"):
        if default in keys:
            return default
    if len(keys) == 1:
        return keys[0]
    raise EdgeError(f"{path}: which array holds the images? pass --key (key=...); it has: {listing}")


def _layout(shape: tuple[int, ...], channels: int, path: Path, key: str) -> str:
    """"NHW", "NCHW" or "NHWC", from where a channel axis (size 1 or 3) sits."""
    where = f"{path}[{key}] has shape {shape}"
    if len(shape) == 3:
        if channels != 1:
            raise EdgeError(f"model expects {describe_channels(channels)}, array has 1 ({where}: no channel axis)")
        return "NHW"
    if len(shape) != 4:
        raise EdgeError(f"{where}; expected (N, H, W), (N, C, H, W) or (N, H, W, C)")
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    if first and last:  # e.g. (N, 1, 28, 1): the reading with square images wins, if only one has them
        first, last = shape[2] == shape[3], shape[1] == shape[2]
        if first == last:
            raise EdgeError(f"{where}: cannot tell channels-first from channels-last; "
                            "save it as (N, C, H, W) with H, W > 3")
    if not (first or last):
        raise EdgeError(f"{where}: no channel axis of size 1 or 3; expected (N, H, W), (N, C, H, W) or (N, H, W, C)")
    return "NCHW" if first else "NHWC"


def load_npz(path: PathLike, key: str | None = None, *, channels: int, size: int,
             limit: int | None = None) -> np.ndarray:
    """Images from an npz file -> (N, C, H, W) float32 in [0, 1].

    ``key`` as in :func:`npz_images_key`. uint8 arrays are divided by 255; float arrays must
    already be in [0, 1]. Layouts (N, H, W) (grey), (N, C, H, W) and (N, H, W, C) are accepted.
    Arrays are never resized: a size mismatch is an error, so a wrong file is not silently
    "fixed". ``limit`` keeps only the first images (converted memory scales with it).
    """
    path = Path(path)
    with _open_npz(path) as data:
        key = _pick_key(data, path, key)
        raw = _read_member(data, path, key)
    shape = tuple(raw.shape)
    if raw.dtype != np.uint8 and raw.dtype not in _FLOAT_DTYPES:
        raise EdgeError(f"{path}[{key}] has dtype {raw.dtype}; expected uint8 (0-255) or float in [0, 1]")
    layout = _layout(shape, channels, path, key)
    if layout == "NHW":
        raw = raw[:, None]
    elif layout == "NHWC":
        raw = raw.transpose(0, 3, 1, 2)
    n, c, h, w = raw.shape
    if c != channels:
        raise EdgeError(f"model expects {describe_channels(channels)}, array has {c} ({path}[{key}] has shape {shape})")
    if (h, w) != (size, size):
        raise EdgeError(f"model expects {size}x{size} images, {path}[{key}] has {h}x{w}; resize them to "
                        f"{size}x{size} first (or pass them as image files, which are resized)")
    if limit is not None:
        raw = raw[:limit]
        n = len(raw)
    if n == 0:
        raise EdgeError(f"{path}[{key}] holds no images")
    out = np.empty((n, c, h, w), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        chunk = raw[start:start + _CHUNK]
        if raw.dtype == np.uint8:
            np.divide(chunk, np.float32(255.0), out=out[start:start + _CHUNK], dtype=np.float32)
            continue
        if not np.isfinite(chunk).all():
            raise EdgeError(f"{path}[{key}] contains NaN or Inf")
        cmin, cmax = float(chunk.min()), float(chunk.max())
        if cmin < 0.0 or cmax > 1.0:
            raise EdgeError(f"{path}[{key}] is float with values from {cmin:g} to {cmax:g}; float images must be "
                            "in [0, 1] (divide 8-bit data by 255, or save it as uint8)")
        out[start:start + _CHUNK] = chunk
    return out


def npz_companion(path: PathLike, images_key: str, kind: str) -> tuple[str, np.ndarray] | None:
    """The array that goes with ``images_key`` ("test_images" -> "test_<kind>", "images" -> "<kind>") and its key,
    or None if the file has none."""
    path = Path(path)
    if not images_key.endswith("images"):
        return None
    key = images_key[: -len("images")] + kind
    with _open_npz(path) as data:
        if key not in data.files:
            return None
        return key, _read_member(data, path, key)


def npz_labels(path: PathLike, images_key: str, limit: int | None = None) -> np.ndarray | None:
    """The labels that go with ``images_key`` ("test_images" -> "test_labels", "images" -> "labels")
    as a flat int64 array, or None if the file has none. Only single-label (N,) / (N, 1) labels."""
    path = Path(path)
    found = npz_companion(path, images_key, "labels")
    if found is None:
        return None
    key, labels = found
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise EdgeError(f"{path}[{key}] has shape {tuple(labels.shape)}; expected one label per image, (N,) or (N, 1)")
    if not (np.issubdtype(labels.dtype, np.integer) or
            (np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0))):
        raise EdgeError(f"{path}[{key}] has dtype {labels.dtype}; expected integer class labels")
    labels = labels.astype(np.int64)
    return labels[:limit] if limit is not None else labels
