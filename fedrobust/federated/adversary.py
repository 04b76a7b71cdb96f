"""Poisoned hospitals (``[adversary]``): which partitions are malicious, and what they do to their data or
to the update they send. Honest hospitals never pass through here.

- data poisoning, on the malicious client's own shard, through the task seam: ``label_flip`` (a class permutation
  y -> y + 1 mod C; for masks, the inverted mask); ``adv_poison`` (adds FGSM copies of its images, crafted on
  the global model it received, with flipped labels: adversarial samples injected into training); ``backdoor``
  (BadNets: a white square in the corner of a share of its images, labelled with the target class; for masks,
  emptied);
- model poisoning, on the weights it sends, with Δ = its trained weights − the global weights:
  ``sign_flip`` sends global − s·Δ, ``scale`` sends global + s·Δ (model replacement),
  ``gaussian`` sends global + N(0, σ²) per weight;
- colluding, ``alie`` and ``ipm``: computed from the round's honest updates, which only the server sees in a
  simulation, so the server applies them before aggregation (``colluding_update`` in
  ``fedrobust.federated.robust``); the malicious client itself trains honestly and says it is malicious.
Float buffers (BatchNorm running statistics) are poisoned like weights; integer ones (its batch counter) are
sent as trained.
"""

from __future__ import annotations

import numpy as np
import torch

from fedrobust.attacks import fgsm
from fedrobust.config import AdversarySection, ExperimentConfig
from fedrobust.tasks.base import Split, Task

StateDict = dict[str, torch.Tensor]
DATA_KINDS = ("label_flip", "adv_poison", "backdoor")
MODEL_KINDS = ("sign_flip", "scale", "gaussian")
COLLUDING_KINDS = ("alie", "ipm")
_SEED_OFFSET = 7_919  # the malicious set is drawn apart from partitioning and sampling


def malicious_partitions(cfg: ExperimentConfig) -> frozenset[int]:
    """The malicious partition ids: ``adversary.partitions``, else round(share x clients) of them drawn with
    ``run.seed`` (the same set on every machine and after a resume)."""
    a, n = cfg.adversary, cfg.partition.num_clients
    if a.kind == "none":
        return frozenset()
    if a.partitions:
        return frozenset(a.partitions)
    count = round(a.share * n)
    rng = np.random.default_rng(cfg.run.seed + _SEED_OFFSET)
    return frozenset(int(i) for i in rng.choice(n, size=count, replace=False))


def attacks_now(cfg: ExperimentConfig, partition_id: int, server_round: int) -> bool:
    return server_round >= cfg.adversary.start_round and partition_id in malicious_partitions(cfg)


def with_trigger(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` with the backdoor trigger: a white ``size`` x ``size`` square in the bottom-right corner."""
    out = x.clone()
    out[..., -size:, -size:] = 1.0
    return out


def poisoned_data(a: AdversarySection, task: Task, model: torch.nn.Module, split: Split,
                  generator: torch.Generator, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The (images, targets) a data-poisoning hospital trains on instead of its shard."""
    flipped = task.flipped_targets(split)
    if a.kind == "label_flip":
        return split.images, flipped
    if a.kind == "adv_poison":
        x, y = split.images, split.targets
        adv = torch.cat([fgsm(model, x[i:i + batch_size], y[i:i + batch_size], a.eps, task.loss)
                         for i in range(0, len(x), batch_size)])
        return torch.cat([x, adv]), torch.cat([y, flipped])
    if a.kind == "backdoor":
        x, y = split.images.clone(), split.targets.clone()
        idx = torch.randperm(len(x), generator=generator)[:max(1, round(a.poison_fraction * len(x)))]
        x[idx] = with_trigger(x[idx], a.trigger_size)
        y[idx] = task.backdoor_targets(y[idx], a.target_class)
        return x, y
    raise ValueError(f"adversary.kind {a.kind!r} does not poison data")


def poison_update(a: AdversarySection, trained: StateDict, global_state: StateDict,
                  generator: torch.Generator) -> StateDict:
    """The weights a malicious client sends instead of ``trained``."""
    out: StateDict = {}
    for key, value in trained.items():
        if not value.is_floating_point():
            out[key] = value
            continue
        base = global_state[key].to(value.dtype)
        if a.kind == "sign_flip":
            out[key] = base - a.scale * (value - base)
        elif a.kind == "scale":
            out[key] = base + a.scale * (value - base)
        elif a.kind == "gaussian":
            out[key] = base + a.sigma * torch.randn(value.shape, generator=generator, dtype=value.dtype)
        else:
            raise ValueError(f"adversary.kind {a.kind!r} does not poison updates")
    return out


def update_stats(global_state: dict[str, np.ndarray], sent: dict[int, dict[str, np.ndarray]],
                 malicious: frozenset[int]) -> dict[str, dict[str, float]]:
    """Per partition: the L2 norm of its update (sent − global, float weights) and its cosine similarity to
    the mean update of the honest partitions of the round: what a defense could see."""
    keys = [k for k, v in global_state.items() if np.issubdtype(np.asarray(v).dtype, np.floating)]

    def flat(state: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([(np.asarray(state[k], np.float64) - global_state[k]).ravel() for k in keys])

    updates = {pid: flat(s) for pid, s in sent.items()}
    honest = [u for pid, u in updates.items() if pid not in malicious]
    mean = np.mean(honest, axis=0) if honest else None
    out = {}
    for pid, u in updates.items():
        norm = float(np.linalg.norm(u))
        cos = (float(u @ mean / (norm * np.linalg.norm(mean))) if mean is not None and norm and np.linalg.norm(mean)
               else float("nan"))
        out[str(pid)] = {"norm": round(norm, 6), "cos_honest": round(cos, 6)}
    return out
