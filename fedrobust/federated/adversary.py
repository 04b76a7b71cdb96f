"""Poisoned hospitals (``[adversary]``): which partitions are malicious, and what they do to their data or
to the update they send. Honest hospitals never pass through here.

- data poisoning, on the malicious client's own shard: ``label_flip`` (a class permutation y -> y + 1 mod C;
  for masks, the inverted mask), through the task seam;
- model poisoning, on the weights it sends, with Δ = its trained weights − the global weights:
  ``sign_flip`` sends global − s·Δ, ``scale`` sends global + s·Δ (model replacement),
  ``gaussian`` sends global + N(0, σ²) per weight.
Integer buffers (BatchNorm's batch counter) are sent as trained.
"""

from __future__ import annotations

import numpy as np
import torch

from fedrobust.config import AdversarySection, ExperimentConfig

StateDict = dict[str, torch.Tensor]
DATA_KINDS = ("label_flip",)
MODEL_KINDS = ("sign_flip", "scale", "gaussian")
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
