"""Cost of adversarial augmentation per epoch, as a ratio to a clean epoch measured in the same run.

Same model, data and batch size; augmentation = the clean batch plus one FGSM copy of every sample.
naive: craft FGSM with its own forward/backward, then train on clean + adversarial (3 passes).
fused: the clean backward pass also yields the input gradient (2 passes). Target: fused <= 2.1x.
Modes are interleaved over repetitions and the median ratio is reported, so machine noise hits
all modes alike. Writes runs/results/augment_overhead.md.

    python benchmarks/augment_overhead.py [--model resnet18] [--samples 2000] [--reps 3]
    python benchmarks/augment_overhead.py --task segmentation   # UNet on Kvasir-SEG at 128 px, eps 0.0118
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
from fedrobust.config import AugmentSection, DataSection, TrainSection
from fedrobust.models import build_model
from fedrobust.tasks.registry import task_of
from fedrobust.train import make_optimizer, train_epoch

ROOT = Path(__file__).resolve().parents[1]
# task -> dataset, model, image size, batch size, eps
SETTINGS = {"classification": ("pneumoniamnist", "resnet18", 28, 64, 0.003),
            "segmentation": ("kvasir-seg", "unet", 128, 16, 0.0118)}


def modes(eps: float) -> dict[str, AugmentSection]:
    return {
        "clean": AugmentSection(mode="none"),
        "naive": AugmentSection(mode="fgsm", eps=eps, combine="append", fused=False),
        "fused": AugmentSection(mode="fgsm", eps=eps, combine="append", fused=True),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="classification", choices=tuple(SETTINGS))
    p.add_argument("--dataset", help="default: pneumoniamnist, or kvasir-seg for segmentation")
    p.add_argument("--model", help="default: resnet18, or unet for segmentation")
    p.add_argument("--samples", type=int, default=2000, help="training images per epoch")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "runs/results/augment_overhead.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dataset, model_name, size, batch, eps = SETTINGS[args.task]
    dataset, model_name = args.dataset or dataset, args.model or model_name
    task = task_of(args.task)
    by_mode = modes(eps)

    data_cfg = DataSection(task=args.task, dataset=dataset, image_size=size)
    data = task.load(data_cfg, "train")
    data = data.subset(range(min(args.samples, len(data))))
    cfg = TrainSection(batch_size=batch, lr=1e-3)
    torch.manual_seed(0)
    model = build_model(model_name, *task.input_shape(data_cfg), size)
    opt = make_optimizer(model, cfg)
    warm = min(256, len(data))
    train_epoch(model, data.images[:warm], data.targets[:warm], opt, cfg, task=task)  # warm-up (allocator, kernels)

    times: dict[str, list[float]] = {m: [] for m in by_mode}
    for rep in range(args.reps):
        for name, aug in by_mode.items():
            policy = AdversarialPolicy(aug, torch.Generator().manual_seed(rep), task.loss)
            stats = train_epoch(model, data.images, data.targets, opt, cfg, policy, epoch=0, task=task,
                                generator=torch.Generator().manual_seed(rep))
            times[name].append(stats.seconds)
            print(f"rep {rep + 1}/{args.reps} {name:5s} {stats.seconds:6.2f}s adv_share {stats.adv_share:.2f}",
                  file=sys.stderr)
    ratio = {m: statistics.median(t / c for t, c in zip(times[m], times["clean"], strict=True)) for m in by_mode}
    ok = ratio["fused"] <= 2.1
    lines = [
        "# Adversarial augmentation overhead per epoch (foundation issue)",
        "",
        f"Command: `{command()}`  ",
        f"Machine: {describe()}",
        "",
        f"{model_name} on {len(data)} {dataset} training images ({size} px), batch {batch}, clean batch + one FGSM",
        f"copy of every sample (ε = {eps:g}). Median over {args.reps} interleaved repetitions of the per-rep ratio.",
        "",
        "| mode | forward/backward passes | epoch seconds (median) | ratio to clean |",
        "| --- | --- | --- | --- |",
    ]
    passes = {"clean": "1 (batch)", "naive": "1 craft + 1 (2× batch)", "fused": "1 (batch) + 1 (adv batch)"}
    for m in by_mode:
        lines.append(f"| {m} | {passes[m]} | {statistics.median(times[m]):.2f} | {ratio[m]:.2f}× |")
    lines += ["", f"Target fused ≤ 2.1×: {'met' if ok else 'NOT met'} ({ratio['fused']:.2f}×)."]
    text = write_report(args.out, lines)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
