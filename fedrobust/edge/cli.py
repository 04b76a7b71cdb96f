"""``fedrobust-edge``: run an exported fedrobust ONNX model on images or an npz file, print JSON.

User errors (bad file, wrong input, bad option) print one line, ``fedrobust-edge: error: ...``,
on stderr and exit 2: the command is meant for scripts on a device, where a traceback is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, NoReturn

import numpy as np

from fedrobust.edge.images import EdgeError, load_image, load_npz, npz_images_key, npz_labels
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
  fedrobust-edge predict model.onnx --npz data.npz --key val_images --limit 100 --threads 2"""

PREDICT_HELP = """\
Images are converted to the model's channels (grey or RGB) and resized to its input size.
npz arrays (uint8 0-255, or float in [0, 1]; layout N,H,W or N,C,H,W or N,H,W,C) must
already have the model's size. With --npz, if the file has labels for the chosen images
("test_images" -> "test_labels", "images" -> "labels"), the output includes "accuracy"."""


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

    predict = sub.add_parser("predict", help="classify image files or an npz array; print JSON",
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
    return parser


def _probabilities(row: np.ndarray, names: list[str], top: int | None) -> dict[str, float]:
    order = np.argsort(-row, kind="stable")[:top] if top else range(len(names))
    return {names[i]: round(float(row[i]), 6) for i in order}


def _predict(args: argparse.Namespace) -> dict[str, Any]:
    if bool(args.images) == bool(args.npz):
        raise EdgeError("give either IMAGE files or --npz FILE" + (", not both" if args.images else ""))
    if not args.npz and (args.key is not None or args.limit is not None):
        raise EdgeError("--key and --limit only apply with --npz")
    model = EdgeModel(args.model, threads=args.threads)
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
