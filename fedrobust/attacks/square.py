"""Square Attack (Andriushchenko et al., ECCV 2020): L-inf, untargeted, score-based black box.

It needs only scores, never gradients, so the same code attacks a torch model or an onnxruntime
model (an :class:`~fedrobust.edge.model.EdgeModel`): everything here is numpy (float32); the
caller passes any numpy -> numpy ``logits_fn``.

The loss is the margin ``score[y] - max_{k != y} score[k]`` on whatever ``logits_fn`` returns.
Logits, log-probabilities and probabilities share the argmax, so they agree on *when* an image
is broken (margin < 0); only the search path differs (logits or log-probs avoid softmax
saturation, like the paper). A single-score head (N, 1) is read as a binary logit ``z``:
class 1 iff ``z > 0``, margin ``z`` for y = 1 and ``-z`` for y = 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

LogitsFn = Callable[[np.ndarray], np.ndarray]
SeedLike = int | np.random.Generator | None

# The paper's schedule for a 10,000-query budget: p_init is halved after each of these
# iterations. Other budgets rescale the iteration index onto this grid.
_HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_SCHEDULE_GRID = 10_000


def p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """Fraction of pixels the square covers at iteration ``it``: large squares early, small late."""
    scaled = int(it / max(n_queries, 1) * _SCHEDULE_GRID)
    return p_init / 2 ** sum(scaled > t for t in _HALVING_POINTS)


def margins(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``score[y] - best other score`` per row (negative = misclassified); float64 for stable comparisons."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or len(scores) != len(y):
        raise ValueError(f"logits_fn must return ({len(y)}, classes) scores, got shape {scores.shape}")
    if scores.shape[1] == 1:
        z = scores[:, 0]
        return np.where(y == 1, z, -z)
    rows = np.arange(len(y))
    true = scores[rows, y]
    others = scores.copy()
    others[rows, y] = -np.inf
    return true - others.max(axis=1)


def square_attack(
    logits_fn: LogitsFn,
    x: np.ndarray,
    y: np.ndarray,
    eps: float | np.ndarray,
    n_queries: int = 1000,
    p_init: float = 0.05,
    generator: SeedLike = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Square Attack on a batch; returns ``(x_adv, queries)``.

    ``x``: (N, C, H, W) in [0, 1] (anything ``np.asarray`` takes, e.g. a CPU tensor); ``y``: (N,)
    or (N, 1) labels; ``eps``: float or per-image (N,). ``x_adv`` is float32 numpy in [0, 1] with
    ``|x_adv - x|_inf <= eps``. ``queries`` (N,) int64 counts one per image per ``logits_fn``
    evaluation: 1 for the clean check (images already misclassified, or with eps = 0, stop there
    and are returned unchanged), then at most ``n_queries`` for the attack itself, so every
    count is ``<= n_queries + 1``. Only images not yet broken are sent to ``logits_fn``.
    ``generator``: seed or numpy Generator; a seed makes the run reproducible. Random draws are
    made for the whole batch every iteration, so one image's path does not depend on when
    the others were broken (torch and ONNX scorers that differ by float noise stay in step).
    """
    rng = np.random.default_rng(generator)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"expected x (N, C, H, W) and y (N,), got {x.shape} and {y.shape}")
    n, c, h, w = x.shape
    eps_b = np.broadcast_to(np.asarray(eps, dtype=np.float32).reshape(-1), (n,)).reshape(n, 1, 1, 1)

    queries = np.ones(n, dtype=np.int64)
    margin = margins(logits_fn(x), y)
    attacked = (margin >= 0) & (eps_b.reshape(n) > 0)
    x_adv = x.copy()
    if n_queries < 1 or not attacked.any():
        return x_adv, queries

    # Initialisation: vertical stripes, each column gets +-eps per channel (the paper found
    # stripes already hurt standard CNNs, which are sensitive to high-frequency patterns).
    sign = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n, c, 1, w))
    sign = np.ascontiguousarray(np.broadcast_to(sign, (n, c, h, w)))
    idx = np.flatnonzero(attacked)
    x_adv[idx] = np.clip(x[idx] + sign[idx] * eps_b[idx], 0.0, 1.0)
    margin[idx] = margins(logits_fn(x_adv[idx]), y[idx])
    queries[idx] += 1

    rows, cols = np.arange(h), np.arange(w)
    bits = np.arange(c)
    for it in range(n_queries - 1):
        alive = attacked & (margin >= 0)
        if not alive.any():
            break
        p = p_schedule(p_init, it, n_queries)
        s = int(min(max(round(np.sqrt(p * h * w)), 1), max(min(h, w) - 1, 1)))
        # Draws for every image (used or not) keep each image's random stream independent of the others.
        top = rng.integers(0, h - s + 1, size=n)
        left = rng.integers(0, w - s + 1, size=n)
        proposal = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n, c))
        flips = rng.integers(1, 2**c, size=n)

        idx = np.flatnonzero(alive)
        in_h = (rows >= top[idx, None]) & (rows < top[idx, None] + s)
        in_w = (cols >= left[idx, None]) & (cols < left[idx, None] + s)
        window = (in_h[:, :, None] & in_w[:, None, :])[:, None]  # (k, 1, H, W)
        old = sign[idx]
        prop = proposal[idx]
        # A proposal equal to what the window already holds would waste a query; the paper
        # redraws until it differs, i.e. picks uniformly among the other 2^C - 1 sign patterns.
        # For eps > 0 a sign change always changes the clipped pixel, so comparing signs suffices.
        same = ~np.any(window & (old != prop[:, :, None, None]), axis=(1, 2, 3))
        if same.any():
            flip = ((flips[idx][same, None] >> bits) & 1).astype(bool)
            prop[same] = np.where(flip, -prop[same], prop[same])
        new = np.where(window, prop[:, :, None, None], old)
        x_new = np.clip(x[idx] + new * eps_b[idx], 0.0, 1.0)
        m_new = margins(logits_fn(x_new), y[idx])
        queries[idx] += 1
        better = m_new < margin[idx]
        keep = idx[better]
        sign[keep] = new[better]
        x_adv[keep] = x_new[better]
        margin[keep] = m_new[better]
    return x_adv, queries
