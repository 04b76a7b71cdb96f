"""Cost of adversarial augmentation per epoch, as a ratio to a clean epoch measured in the same run.

Same model, data and batch size; augmentation = the clean batch plus one FGSM copy of every sample.
naive: craft FGSM with its own forward/backward, then train on clean + adversarial (3 passes).
fused: the clean backward pass also yields the input gradient (2 passes). Target: fused <= 2.1x.
Modes are interleaved over repetitions and the median ratio is reported, so machine noise hits
all modes alike. Writes runs/results/augment_overhead.md.

    python benchmarks/augment_overhead.py [--model resnet18] [--samples 2000] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report

from fedrobust.augment import AdversarialPolicy
from fedrobust.config import AugmentSection, TrainSection
from fedrobust.data.loading import load_split
from fedrobust.models import build_model
from fedrobust.tasks.registry import task_of
from fedrobust.train import make_optimizer, train_epoch

ROOT = Path(__file__).resolve().parents[1]
TASK = task_of("classification")
MODES = {
    "clean": AugmentSection(mode="none"),
    "naive": AugmentSection(mode="fgsm", eps=0.003, combine="append", fused=False),
    "fused": AugmentSection(mode="fgsm", eps=0.003, combine="append", fused=True),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="pneumoniamnist")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--samples", type=int, default=2000, help="training images per epoch")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "runs/results/augment_overhead.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    data = load_split(args.dataset, "train")
    data = data.subset(range(min(args.samples, len(data))))
    cfg = TrainSection(batch_size=64, lr=1e-3)
    torch.manual_seed(0)
    model = build_model(args.model, data.images.shape[1], data.info.num_classes, data.images.shape[-1])
    opt = make_optimizer(model, cfg)
    train_epoch(model, data.images[:256], data.labels[:256], opt, cfg, task=TASK)  # warm-up (allocator, kernels)

    times: dict[str, list[float]] = {m: [] for m in MODES}
    for rep in range(args.reps):
        for name, aug in MODES.items():
            policy = AdversarialPolicy(aug, torch.Generator().manual_seed(rep))
            stats = train_epoch(model, data.images, data.labels, opt, cfg, policy, epoch=0, task=TASK,
                                generator=torch.Generator().manual_seed(rep))
            times[name].append(stats.seconds)
            print(f"rep {rep + 1}/{args.reps} {name:5s} {stats.seconds:6.2f}s adv_share {stats.adv_share:.2f}",
                  file=sys.stderr)
    ratio = {m: statistics.median(t / c for t, c in zip(times[m], times["clean"], strict=True)) for m in MODES}
    ok = ratio["fused"] <= 2.1
    lines = [
        "# Adversarial augmentation overhead per epoch (foundation issue)",
        "",
        f"Command: `{command()}`  ",
        f"Machine: {describe()}",
        "",
        f"{args.model} on {len(data)} {args.dataset} training images (28 px), batch 64, clean batch + one FGSM",
        f"copy of every sample (ε = 0.003). Median over {args.reps} interleaved repetitions of the per-rep ratio.",
        "",
        "| mode | forward/backward passes | epoch seconds (median) | ratio to clean |",
        "| --- | --- | --- | --- |",
    ]
    passes = {"clean": "1 (batch)", "naive": "1 craft + 1 (2× batch)", "fused": "1 (batch) + 1 (adv batch)"}
    for m in MODES:
        lines.append(f"| {m} | {passes[m]} | {statistics.median(times[m]):.2f} | {ratio[m]:.2f}× |")
    lines += ["", f"Target fused ≤ 2.1×: {'met' if ok else 'NOT met'} ({ratio['fused']:.2f}×)."]
    text = write_report(args.out, lines)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
