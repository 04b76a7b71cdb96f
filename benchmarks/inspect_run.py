"""Figures read off one federated run directory, for the results pages (federation issue).

- the class shares of the dataset's train / val / test splits;
- per round range (``--rounds A-B``): the mean, min and max of the server's test ACC, test FGSM accuracy (at the
  run's ``federation.eval_eps``), val ACC and val AUC from ``metrics.jsonl``;
- the round each val criterion would select (first best, as the server keeps it);
- the clients' mean training loss in the last round;
- one checkpoint (``--checkpoint``, default ``model.pt``; e.g. ``checkpoints/round_0019.pt``): test
  ACC / AUC, FGSM accuracy at every ``eval.fgsm_eps``, and accuracy per class, clean and under FGSM
  at ``--class-eps``;
- for a binary task, the decision threshold on p(class 1) that maximises the checkpoint's val accuracy, and
  test accuracy at it (does a val-tuned operating point generalise?).

    python benchmarks/inspect_run.py RUN_DIR [--rounds 9-20 ...] [--checkpoint model.pt] [--class-eps 0.005]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from fedrobust.config import load_config
from fedrobust.data.loading import load_from_config
from fedrobust.models import model_for
from fedrobust.rundir import RunDir
from fedrobust.train.evaluate import adversarial_images, medmnist_metrics, predict_proba

SERVER_KEYS = ("acc", "fgsm_acc", "val_acc", "val_auc")
SELECT_KEYS = ("val_auc", "val_acc", "val_fgsm_acc")


def round_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    return int(first), int(last or first)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--rounds", type=round_range, action="append", default=[], metavar="A-B")
    p.add_argument("--checkpoint", default="model.pt", help="relative to the run directory")
    p.add_argument("--class-eps", type=float, default=0.005)
    args = p.parse_args()
    cfg = load_config(args.run_dir / "config.toml")
    rounds = [r for r in RunDir(args.run_dir).metrics() if r.get("round", 0) >= 1]

    splits = {s: load_from_config(cfg.data, s) for s in ("train", "val", "test")}
    print(f"{args.run_dir.name}: eval_eps {cfg.federation.eval_eps}")
    for name, split in splits.items():
        shares = torch.bincount(split.labels, minlength=split.info.num_classes).float() / len(split)
        print(f"  {name}: {len(split)} images, class shares " + " ".join(f"{s:.3f}" for s in shares.tolist()))
    for first, last in args.rounds:
        chosen = [r["server"] for r in rounds if first <= r["round"] <= last]
        values = {k: [s[k] for s in chosen] for k in SERVER_KEYS if all(k in s for s in chosen)}
        print(f"  rounds {first}-{last}, mean [min-max]: " + "  ".join(
            f"{k} {statistics.mean(v):.3f} [{min(v):.3f}-{max(v):.3f}]" for k, v in values.items()))
    for key in SELECT_KEYS:
        scored = [r for r in rounds if key in r["server"]]
        if scored:
            best = max(scored, key=lambda r: (r["server"][key], -r["round"]))
            s = best["server"]
            print(f"  {key} selects round {best['round']}: test acc {s['acc']:.3f}, fgsm_acc {s['fgsm_acc']:.3f}")
    last = rounds[-1]
    print(f"  round {last['round']}: clients' train loss {last['clients']['train-loss']:.3f}")

    test = splits["test"]
    model = model_for(cfg, test.images.shape[1], test.info.num_classes)
    model.load_state_dict(torch.load(args.run_dir / args.checkpoint, map_location="cpu", weights_only=False)["model"])
    attacked = {eps: adversarial_images(model, test, eps, cfg.eval.batch_size)  # each eps attacked once
                for eps in dict.fromkeys([*cfg.eval.fgsm_eps, args.class_eps])}
    # every image set predicted once; its probabilities give the metrics and the per-class rows
    p_clean = predict_proba(model, test.images, cfg.eval.batch_size)
    p_fgsm = {eps: predict_proba(model, x, cfg.eval.batch_size) for eps, x in attacked.items()}
    labels, task = test.labels.numpy(), test.info.medmnist_task
    clean_acc, clean_auc = medmnist_metrics(labels, p_clean.numpy(), task)
    print(f"  {args.checkpoint}: test acc {clean_acc:.3f} auc {clean_auc:.3f}; FGSM acc "
          + "  ".join(f"{eps:g}:{medmnist_metrics(labels, p_fgsm[eps].numpy(), task)[0]:.3f}"
                      for eps in cfg.eval.fgsm_eps))
    probs = {"clean": p_clean, f"FGSM@{args.class_eps:g}": p_fgsm[args.class_eps]}
    for label in probs:
        predicted = probs[label].argmax(1)
        per_class = [(predicted[test.labels == c] == c).float().mean().item() for c in range(test.info.num_classes)]
        print(f"  {label} accuracy per class: " + " ".join(f"{a:.3f}" for a in per_class))
    if test.info.num_classes == 2:
        print_val_threshold(model, splits["val"], test, p_clean[:, 1], cfg.eval.batch_size)
    return 0


def print_val_threshold(model: torch.nn.Module, val, test, p_test: torch.Tensor, batch_size: int) -> None:
    """The threshold on p(class 1) best on val (of the cut points between val scores; the one nearest
    0.5 among ties), and test accuracy at 0.5 and at that threshold (``p_test``: test's p(class 1))."""
    p_val = predict_proba(model, val.images, batch_size)[:, 1]
    scores = torch.sort(torch.unique(torch.cat([p_val, torch.tensor([0.0, 1.0])]))).values
    cuts = torch.cat([torch.tensor([0.5]), (scores[1:] + scores[:-1]) / 2])

    def acc(p: torch.Tensor, y: torch.Tensor, t: float) -> float:
        return float(((p >= t).long() == y).float().mean())

    val_acc = torch.tensor([acc(p_val, val.labels, float(t)) for t in cuts])
    tied = cuts[val_acc == val_acc.max()]
    best = float(tied[(tied - 0.5).abs().argmin()])
    print(f"  val-tuned threshold {best:.3f}: val acc {acc(p_val, val.labels, 0.5):.3f} -> "
          f"{acc(p_val, val.labels, best):.3f}, test acc {acc(p_test, test.labels, 0.5):.3f} -> "
          f"{acc(p_test, test.labels, best):.3f}")


if __name__ == "__main__":
    sys.exit(main())
