"""Seeds and thread settings applied at the start of every run."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int, threads: int = 0) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator for data order."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.Generator().manual_seed(seed)
