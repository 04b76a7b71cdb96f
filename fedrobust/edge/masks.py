"""Segmentation on the edge: per-pixel logits -> binary masks, PNG files to look at, and IoU / Dice.

A segmentation model (metadata ``task`` "segmentation") outputs one logit per pixel; the pixel is
polyp (``class_names[1]``) where the logit exceeds ``metadata.threshold``. Thresholding the logit,
not a rounded probability, keeps the edge's masks identical to the ones training scored. Ground-truth
masks come from npz arrays or from a Kvasir-SEG style folder (``images/`` and ``masks/`` matched by
file stem). numpy and Pillow only, like the rest of ``fedrobust.edge``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fedrobust.edge.images import EdgeError, PathLike, npz_companion
from fedrobust.edge.model import EdgeModel

EXTENSIONS = (".png", ".jpg", ".jpeg")
MASK_GREY_THRESHOLD = 127  # grey > 127 is polyp, as the training data loader reads Kvasir-SEG masks
OVERLAY_COLOUR = (255, 0, 0)
OVERLAY_ALPHA = 0.4


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function as float32; ``exp(-log(1 + exp(-z)))`` never overflows, whatever the sign of z."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z)).astype(np.float32)


def masks_of(model: EdgeModel, x: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W) images -> (masks bool (N, H, W), polyp probabilities float32 (N, H, W)).

    The mask is ``logit > metadata.threshold``, the model's own decision rule; the probabilities are
    only for reporting confidence.
    """
    meta = model.metadata
    if not meta.is_mask:
        raise EdgeError(f"{model.path} is a {meta.task} classifier, not a segmentation model")
    logits = model.predict_logits(x, batch_size)[:, 0]
    return logits > meta.threshold, sigmoid(logits)


# ------------------------------------------------------------------------------------------ PNG files


def _save(img: Image.Image, path: PathLike) -> None:
    try:
        img.save(path, format="PNG")
    except OSError as exc:
        raise EdgeError(f"cannot write {path} ({exc.strerror or exc})") from None


def save_mask_png(mask: np.ndarray, path: PathLike) -> None:
    """(H, W) bool -> 8-bit grey PNG, 255 on polyp and 0 elsewhere (the Kvasir-SEG mask convention)."""
    _save(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)), path)


def _contour(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask: a 1-px inner outline of each region."""
    p = np.pad(mask, 1, mode="edge")  # no outline along the image border, only where the mask changes
    inside = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inside


def save_overlay_png(image: np.ndarray, mask: np.ndarray, path: PathLike) -> None:
    """The (C, H, W) [0, 1] model input as an RGB PNG, polyp pixels tinted red (40 %) and outlined, so a
    person can judge the mask against the image it came from."""
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    rgb = rgb.transpose(1, 2, 0).astype(np.float32) * 255.0
    colour = np.array(OVERLAY_COLOUR, dtype=np.float32)
    rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * colour
    rgb[_contour(mask)] = colour
    _save(Image.fromarray(np.ascontiguousarray(np.clip(np.rint(rgb), 0, 255), dtype=np.uint8)), path)


# ---------------------------------------------------------------------------------------------- scores


def _as_nhw(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks).astype(bool, copy=False)
    return masks[:, 0] if masks.ndim == 4 and masks.shape[1] == 1 else masks


def iou_dice_per_image(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Polyp IoU and Dice of each image, (N,) float64 each, for (N, H, W) or (N, 1, H, W) masks.

    An image whose true and predicted masks are both empty scores 1 (nothing to find, nothing found),
    as MONAI's ``ignore_empty=False`` that training reports; an empty truth with a prediction scores 0.
    """
    pred, true = _as_nhw(pred), _as_nhw(true)
    if pred.shape != true.shape or pred.ndim != 3:
        raise EdgeError(f"predicted masks {pred.shape} and true masks {true.shape} must both be (N, H, W)")
    inter = (pred & true).sum(axis=(1, 2), dtype=np.float64)
    total = pred.sum(axis=(1, 2), dtype=np.float64) + true.sum(axis=(1, 2), dtype=np.float64)
    union = total - inter
    iou = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    dice = np.divide(2 * inter, total, out=np.ones_like(inter), where=total > 0)
    return iou, dice


def iou_dice(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """Mean over images of the polyp IoU and Dice (per image first, as the Kvasir-SEG literature reports)."""
    iou, dice = iou_dice_per_image(pred, true)
    if not len(iou):
        raise EdgeError("no masks to score")
    return float(iou.mean()), float(dice.mean())


# ------------------------------------------------------------------------------------ ground-truth masks


def _binary(raw: np.ndarray, where: str) -> np.ndarray:
    if raw.dtype == bool:
        return raw
    if not np.issubdtype(raw.dtype, np.integer) and not np.issubdtype(raw.dtype, np.floating):
        raise EdgeError(f"{where} has dtype {raw.dtype}; expected masks of 0/1 or 0/255")
    if np.isin(raw, (0, 1)).all() or np.isin(raw, (0, 255)).all():
        return raw > 0
    raise EdgeError(f"{where} holds values from {np.nanmin(raw):g} to {np.nanmax(raw):g}, not only 0/1 or "
                    f"0/255; save binary masks")


def npz_masks(path: PathLike, images_key: str, size: int, limit: int | None = None) -> np.ndarray | None:
    """The masks that go with ``images_key`` ("test_images" -> "test_masks", "images" -> "masks") as
    (N, H, W) bool, or None if the file has none. (N, H, W) or (N, 1, H, W), values 0/1 or 0/255."""
    path = Path(path)
    found = npz_companion(path, images_key, "masks")
    if found is None:
        return None
    key, raw = found
    if raw.ndim == 4 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 3 or raw.shape[1:] != (size, size):
        raise EdgeError(f"{path}[{key}] has shape {tuple(raw.shape)}; expected masks of the images' size, "
                        f"(N, {size}, {size}) or (N, 1, {size}, {size})")
    return _binary(raw[:limit], f"{path}[{key}]")


def load_mask(path: PathLike, size: int) -> np.ndarray:
    """A mask image -> (size, size) bool. Grey > 127 is polyp (0/1 masks: > 0); resized like training does,
    bilinear (antialiased) as float, then > 0.5, so it stays aligned with its resized image."""
    try:
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgeError(f"{path} is not a readable mask image ({reason})") from None
    mask = grey > (0 if grey.max() <= 1 else MASK_GREY_THRESHOLD)
    if mask.shape != (size, size):
        resized = Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.BILINEAR)
        mask = np.asarray(resized) > 0.5
    return mask


def _scan(sub: Path) -> dict[str, Path]:
    if not sub.is_dir():
        raise EdgeError(f"{sub} is not a folder; --folder DIR needs DIR/images and DIR/masks (the Kvasir-SEG "
                        f"layout)")
    found: dict[str, Path] = {}
    for path in sorted(sub.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in EXTENSIONS or not path.is_file():
            continue
        if path.stem in found:
            raise EdgeError(f"{sub} has both {found[path.stem].name} and {path.name}; keep one of them")
        found[path.stem] = path
    return found


def folder_pairs(folder: PathLike) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) for each PNG/JPEG in ``folder/images`` and its namesake in ``folder/masks``,
    sorted by stem; an unmatched file is an error, since silently skipping it would change the score."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeError(f"{folder}: no such folder" if not folder.exists() else f"{folder} is not a folder")
    images, masks = _scan(folder / "images"), _scan(folder / "masks")
    if not images:
        raise EdgeError(f"{folder / 'images'} holds no PNG or JPEG files")
    unmatched = sorted(set(images) ^ set(masks))
    if unmatched:
        stem = unmatched[0]
        lonely, other = (images[stem], "masks") if stem in images else (masks[stem], "images")
        raise EdgeError(f"{lonely} has no namesake in {folder / other} ({len(unmatched)} unmatched file(s))")
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]
