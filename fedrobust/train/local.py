"""One epoch of (adversarially augmented) training: the unit both centralized and federated use."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from fedrobust.augment import AdversarialPolicy, ClassicAugment
from fedrobust.config import TrainSection
from fedrobust.device import device_of
from fedrobust.errors import FedrobustError
from fedrobust.tasks.base import Task
from fedrobust.train.batches import iterate_batches


@dataclass
class EpochStats:
    """What one pass over the local data did."""

    loss: float  # mean training loss over all samples trained on (clean + adversarial)
    accuracy: float  # the task's per-sample score (accuracy; IoU for masks) on the clean samples, in train mode
    num_examples: int  # clean samples seen
    adv_share: float  # adversarial samples / samples trained on
    seconds: float
    steps: int = 0  # optimizer steps taken

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def make_optimizer(model: nn.Module, cfg: TrainSection) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def class_weights(cfg: TrainSection, labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """Per-class loss weights for ``train.class_weights``: None, or "balanced" (n / (C * n_c), as
    scikit-learn's), from ``labels``: the whole training split, not a client's skewed shard, so all
    clients of a federation weight the classes alike. A class absent from ``labels`` gets weight 0."""
    if cfg.class_weights == "none":
        return None
    counts = torch.bincount(labels.long().reshape(-1), minlength=num_classes).double()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp_min(1)), 0.0)
    return weights.float()


def _fused_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, policy: AdversarialPolicy, task: Task,
    class_weight: torch.Tensor | None = None,
) -> tuple[float, int, int, torch.Tensor]:
    """Clean forward/backward that also yields d loss / d x, then one backward on the adversarial copies.

    The two losses are weighted as if clean and adversarial samples formed one batch.
    """
    n = len(x)
    m = max(1, round(policy.cfg.fraction * n)) * (2 if policy.cfg.mode == "both" else 1)
    x = x.detach().requires_grad_(True)
    logits = model(x)
    clean = task.loss(logits, y, reduction="sum", class_weight=class_weight)
    (clean / (n + m)).backward()
    # a positive per-sample weight scales x.grad but not its sign: FGSM's step is unchanged
    batch = policy.augment(model, x.detach(), y, input_grad=x.grad)
    adv = task.loss(model(batch.x), batch.y, reduction="sum", class_weight=class_weight)
    (adv / (n + batch.n_adv)).backward()
    return float(clean.detach() + adv.detach()), n + batch.n_adv, batch.n_adv, logits.detach()


def train_epoch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    cfg: TrainSection,
    policy: AdversarialPolicy | None = None,
    classic: ClassicAugment | None = None,
    epoch: int = 0,
    generator: torch.Generator | None = None,
    progress=None,
    proximal_mu: float = 0.0,
    anchor: list[torch.Tensor] | None = None,
    class_weight: torch.Tensor | None = None,
    *,
    task: Task,
) -> EpochStats:
    """Train ``model`` in place for one epoch over ``(x, y)`` on ``task``'s loss; returns its statistics.

    With ``proximal_mu > 0`` and ``anchor`` (the global parameters), adds FedProx's proximal
    term mu/2 * ||w - w_global||^2 through its gradient mu * (w - w_global). ``class_weight``:
    per-class loss weights (``class_weights``). Batches are drawn (and classically augmented) on the CPU, then
    trained on the model's device.
    """
    model.train()
    device = device_of(model)
    class_weight = None if class_weight is None else class_weight.to(device)
    adversarial = policy is not None and policy.active(epoch)
    fused = adversarial and policy.cfg.fused
    start = time.perf_counter()
    loss_sum, trained, adv_total, correct, clean_seen, steps = 0.0, 0, 0, 0.0, 0, 0
    for xb, yb in iterate_batches(x, y, cfg.batch_size, shuffle=True, generator=generator,
                                  drop_last_singleton=True):
        if classic:
            xb, yb = classic(xb, yb)
        labels = yb
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        if fused:
            batch_loss, n_trained, n_adv, clean_logits = _fused_step(model, xb, yb, policy, task, class_weight)
        else:
            batch = policy.augment(model, xb, yb) if adversarial else None
            bx, by = (batch.x, batch.y) if batch else (xb, yb)
            logits = model(bx)
            loss = task.loss(logits, by, reduction="sum", class_weight=class_weight)
            (loss / len(by)).backward()
            batch_loss, n_trained, n_adv = float(loss.detach()), len(by), batch.n_adv if batch else 0
            clean_logits = logits[: len(yb)].detach()
        if not math.isfinite(batch_loss):  # stop here rather than train on and save a NaN model
            raise FedrobustError(f"the training loss became {batch_loss} in epoch {epoch + 1}; lower train.lr "
                                 f"(now {cfg.lr:g}) or check the data")
        if proximal_mu > 0 and anchor is not None:
            with torch.no_grad():
                for p, p0 in zip(model.parameters(), anchor, strict=True):
                    if p.grad is not None:
                        p.grad.add_(p - p0, alpha=proximal_mu)
        optimizer.step()
        steps += 1
        loss_sum += batch_loss
        trained += n_trained
        adv_total += n_adv
        clean_seen += len(yb)
        correct += float(task.per_sample(clean_logits.cpu(), labels).sum())
        if progress is not None:
            progress.update(len(yb))
    return EpochStats(
        loss=loss_sum / max(trained, 1),
        accuracy=correct / max(clean_seen, 1),
        num_examples=clean_seen,
        adv_share=adv_total / max(trained, 1),
        seconds=time.perf_counter() - start,
        steps=steps,
    )
