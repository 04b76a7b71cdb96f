"""Logits to probabilities, numpy only: the one softmax of fedrobust (edge runtime, evaluation, sweeps)."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, returned as float32; subtracting the row max keeps exp() finite."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32)
