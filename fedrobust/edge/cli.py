"""``fedrobust-edge``: run an exported fedrobust ONNX model on images or an npz file, print JSON.

User errors (bad file, wrong input, bad option) print one line, ``fedrobust-edge: error: ...``,
on stderr and exit 2: the command is meant for scripts on a device, where a traceback is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from fedrobust.edge.images import EdgeError, load_image, load_npz, npz_images_key, npz_labels
from fedrobust.edge.masks import (
    folder_pairs,
    iou_dice_per_image,
    load_mask,
    masks_of,
    npz_masks,
    save_mask_png,
    save_overlay_png,
)
from fedrobust.edge.metadata import ModelMetadata
from fedrobust.edge.model import EdgeModel

PROG = "fedrobust-edge"

DESCRIPTION = """\
Run an exported fedrobust ONNX model on the CPU with onnxruntime (no torch needed).
Output is JSON on stdout; errors are one line on stderr with exit code 2."""

EXAMPLES = """\
examples:
  fedrobust-edge info model.onnx
  fedrobust-edge predict model.onnx scan1.png scan2.jpg
  fedrobust-edge predict model.onnx scan.png --top 1
  fedrobust-edge predict model.onnx --npz breastmnist.npz            # test_images; accuracy if test_labels
  fedrobust-edge predict model.onnx --npz data.npz --key val_images --limit 100 --threads 2
  fedrobust-edge predict unet.onnx polyp.jpg --out masks/            # segmentation: mask + overlay PNGs
  fedrobust-edge predict unet.onnx --npz kvasir.npz --out masks/     # + iou, dice if test_masks
  fedrobust-edge predict unet.onnx --folder Kvasir-SEG --out masks/  # images/ + masks/: iou, dice"""

PREDICT_HELP = """\
Images are converted to the model's channels (grey or RGB) and resized to its input size.
npz arrays (uint8 0-255, or float in [0, 1]; layout N,H,W or N,C,H,W or N,H,W,C) must
already have the model's size. With --npz, if the file has labels for the chosen images
("test_images" -> "test_labels", "images" -> "labels"), the output includes "accuracy".

Segmentation models (task "segmentation") need --out DIR: each input gets <stem>.mask.png
(0/255) and <stem>.overlay.png there. With masks for the images ("test_masks", "masks" in the
npz: 0/1 or 0/255; or --folder DIR holding images/ and masks/ matched by file stem), the
output includes the mean "iou" and "dice" of the polyp class."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other error (and exit 2, as argparse does)."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see {self.prog} --help)"
        self.exit(2, f"{PROG}: error: {message}{hint}\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum``, with a one-line message otherwise."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=DESCRIPTION, epilog=EXAMPLES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)

    info = sub.add_parser("info", help="print the model's metadata and graph inputs/outputs as JSON",
                          description="Print the fedrobust metadata stored in MODEL and its graph inputs/outputs.",
                          epilog="example:\n  fedrobust-edge info model.onnx",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    info.add_argument("model", metavar="MODEL.onnx", help="an ONNX file written by `fedrobust export`")

    predict = sub.add_parser("predict", help="classify (or segment) image files or an npz array; print JSON",
                             description=PREDICT_HELP, epilog=EXAMPLES,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("model", metavar="MODEL.onnx", help="an ONNX file written by `fedrobust export`")
    predict.add_argument("images", metavar="IMAGE", nargs="*", help="image files (PNG, JPEG, ...)")
    predict.add_argument("--npz", metavar="FILE", help="classify the images in this npz file instead of IMAGE files")
    predict.add_argument("--key", help="npz array holding the images (default: images, else test_images, "
                                       "else the only array)")
    predict.add_argument("--limit", type=_positive, metavar="N", help="only the first N images of the npz")
    predict.add_argument("--threads", type=_non_negative, default=1, metavar="N",
                         help="onnxruntime intra-op threads (default 1; 0 = one per core)")
    predict.add_argument("--batch-size", type=_positive, default=256, metavar="B",
                         help="images per onnxruntime run; bounds memory (default 256)")
    predict.add_argument("--top", type=_positive, metavar="K",
                         help="list only the K most probable classes, most probable first (default: all, in "
                              "class order)")
    predict.add_argument("--out", metavar="DIR", help="segmentation: write mask and overlay PNGs here (required; "
                                                      "created if missing)")
    predict.add_argument("--folder", metavar="DIR", help="segmentation: segment DIR/images and score against "
                                                         "DIR/masks (Kvasir-SEG layout)")
    return parser


def _probabilities(row: np.ndarray, names: list[str], top: int | None) -> dict[str, float]:
    order = np.argsort(-row, kind="stable")[:top] if top else range(len(names))
    return {names[i]: round(float(row[i]), 6) for i in order}


def _predict(args: argparse.Namespace) -> dict[str, Any]:
    sources = sum(map(bool, (args.images, args.npz, args.folder)))
    if sources != 1:
        raise EdgeError("give either IMAGE files or --npz FILE" + (" or --folder DIR" if args.folder else "")
                        + {2: ", not both", 3: ", not all three"}.get(sources, ""))
    if not args.npz and (args.key is not None or args.limit is not None):
        raise EdgeError("--key and --limit only apply with --npz")
    model = EdgeModel(args.model, threads=args.threads)
    if model.metadata.is_mask:
        return _segment(args, model)
    if args.out is not None or args.folder is not None:
        raise EdgeError(f"--out and --folder only apply to segmentation models; {args.model} is a "
                        f"{model.metadata.task} classifier")
    return _classify(args, model)


def _classify(args: argparse.Namespace, model: EdgeModel) -> dict[str, Any]:
    meta = model.metadata
    names = meta.class_names
    out: dict[str, Any] = {"model": args.model, "dataset": meta.dataset, "precision": meta.precision}
    predictions: list[dict[str, Any]] = []

    def emit(inputs: Sequence[str], x: np.ndarray) -> np.ndarray:
        labels, proba = model.predict(x, batch_size=args.batch_size)
        for name, label, row in zip(inputs, labels, proba, strict=True):
            predictions.append({"input": name, "label": int(label), "class": names[label],
                                "probabilities": _probabilities(row, names, args.top)})
        return labels

    if args.images:
        # Load a batch of files at a time: memory stays bounded however many files are given.
        for start in range(0, len(args.images), args.batch_size):
            files = args.images[start:start + args.batch_size]
            emit(files, np.stack([load_image(f, meta.channels, meta.image_size) for f in files]))
    else:
        key = npz_images_key(args.npz, args.key)
        x = load_npz(args.npz, key, channels=meta.channels, size=meta.image_size, limit=args.limit)
        truth = npz_labels(args.npz, key, limit=args.limit)
        if truth is not None:
            if len(truth) != len(x):
                raise EdgeError(f"{args.npz}: {len(x)} images but {len(truth)} labels")
            if truth.min() < 0 or truth.max() >= meta.num_classes:
                raise EdgeError(f"{args.npz}: labels range {truth.min()}-{truth.max()} but the model has "
                                f"{meta.num_classes} classes ({meta.dataset}); is this the right file?")
        out["npz_key"] = key
        labels = emit([f"{args.npz}[{i}]" for i in range(len(x))], x)
        if truth is not None:
            for pred, true in zip(predictions, truth, strict=True):
                pred["true_label"] = int(true)
            out["accuracy"] = round(float(np.mean(labels == truth)), 6)
    out["predictions"] = predictions
    return out


# ------------------------------------------------------------------------------------------ segmentation

_Batch = tuple[list[str], list[str], np.ndarray, np.ndarray | None]  # names, file stems, images, true masks


def _out_dir(path: str | None, model: str) -> Path:
    if path is None:
        raise EdgeError(f"{model} is a segmentation model: pass --out DIR, the folder for its mask and overlay PNGs")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise EdgeError(f"--out {out} is a file; give a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeError(f"cannot create --out folder {out} ({exc.strerror or exc})") from None
    return out


def _file_batches(files: list[str], meta: ModelMetadata, batch_size: int) -> Iterator[_Batch]:
    stems: dict[str, str] = {}
    for f in files:
        if Path(f).stem in stems:
            raise EdgeError(f"{stems[Path(f).stem]} and {f} would write the same {Path(f).stem}.mask.png; "
                            f"rename one or run them separately")
        stems[Path(f).stem] = f
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        x = np.stack([load_image(f, meta.channels, meta.image_size) for f in chunk])
        yield chunk, [Path(f).stem for f in chunk], x, None


def _folder_batches(folder: str, meta: ModelMetadata, batch_size: int) -> Iterator[_Batch]:
    pairs = folder_pairs(folder)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        x = np.stack([load_image(image, meta.channels, meta.image_size) for _, image, _ in chunk])
        truth = np.stack([load_mask(mask, meta.image_size) for _, _, mask in chunk])
        yield [str(image) for _, image, _ in chunk], [stem for stem, _, _ in chunk], x, truth


def _npz_batch(args: argparse.Namespace, key: str, meta: ModelMetadata) -> _Batch:
    x = load_npz(args.npz, key, channels=meta.channels, size=meta.image_size, limit=args.limit)
    truth = npz_masks(args.npz, key, meta.image_size, limit=args.limit)
    if truth is not None and len(truth) != len(x):
        raise EdgeError(f"{args.npz}: {len(x)} images but {len(truth)} masks")
    digits, stem = len(str(len(x) - 1)), Path(args.npz).stem
    return [f"{args.npz}[{i}]" for i in range(len(x))], [f"{stem}_{i:0{digits}d}" for i in range(len(x))], x, truth


def _mask_entry(name: str, files: tuple[Path, Path], mask: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    polyp = proba[mask]
    return {"file": name, "mask": str(files[0]), "overlay": str(files[1]),
            "foreground_fraction": round(float(mask.mean()), 6),
            "mean_polyp_probability": round(float(polyp.mean()), 6) if polyp.size else None}


def _segment(args: argparse.Namespace, model: EdgeModel) -> dict[str, Any]:
    """Masks and overlays into --out, one JSON entry per input, and mean IoU / Dice where masks are known."""
    meta = model.metadata
    if args.top is not None:
        raise EdgeError("--top only applies to classification models")
    out_dir = _out_dir(args.out, args.model)
    out: dict[str, Any] = {"model": args.model, "dataset": meta.dataset, "precision": meta.precision,
                           "task": meta.task, "threshold": meta.threshold, "out": str(out_dir)}
    if args.npz:
        out["npz_key"] = key = npz_images_key(args.npz, args.key)
        batches: Iterator[_Batch] = iter([_npz_batch(args, key, meta)])
    elif args.folder:
        batches = _folder_batches(args.folder, meta, args.batch_size)
    else:
        batches = _file_batches(args.images, meta, args.batch_size)
    predictions: list[dict[str, Any]] = []
    scores: list[tuple[np.ndarray, np.ndarray]] = []
    for names, stems, x, truth in batches:
        masks, proba = masks_of(model, x, args.batch_size)
        entries = []
        for name, stem, image, mask, p in zip(names, stems, x, masks, proba, strict=True):
            files = (out_dir / f"{stem}.mask.png", out_dir / f"{stem}.overlay.png")
            save_mask_png(mask, files[0])
            save_overlay_png(image, mask, files[1])
            entries.append(_mask_entry(name, files, mask, p))
        if truth is not None:
            scores.append(iou_dice_per_image(masks, truth))
            for entry, iou, dice in zip(entries, *scores[-1], strict=True):
                entry["iou"], entry["dice"] = round(float(iou), 6), round(float(dice), 6)
        predictions.extend(entries)
    if scores:
        out["iou"] = round(float(np.concatenate([s[0] for s in scores]).mean()), 6)
        out["dice"] = round(float(np.concatenate([s[1] for s in scores]).mean()), 6)
    out["predictions"] = predictions
    return out


def _info(args: argparse.Namespace) -> dict[str, Any]:
    model = EdgeModel(args.model)
    meta = model.metadata
    return {"model": args.model, "metadata": asdict(meta), "num_classes": meta.num_classes,
            **model.io_info(), "providers": model.session.get_providers()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fedrobust-edge``; returns the exit code (0 ok, 2 user error)."""
    args = build_parser().parse_args(argv)
    try:
        result = _predict(args) if args.command == "predict" else _info(args)
    except EdgeError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    try:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `fedrobust-edge ... | head`: the reader left; stop Python's exit-time flush failing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
