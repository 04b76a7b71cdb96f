"""Mini-batches straight from in-memory tensors (MedMNIST fits in RAM; no DataLoader workers)."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False,
                    generator: torch.Generator | None = None,
                    drop_last_singleton: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield contiguous ``(x, y)`` batches; optionally skip a trailing batch of one sample.

    A batch of one breaks BatchNorm in train mode, so training drops it.
    """
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if drop_last_singleton and len(idx) == 1 and n > 1:
            return
        yield x[idx].contiguous(), y[idx]
