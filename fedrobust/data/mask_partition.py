"""Split a segmentation training set among hospitals: IID, quantity skew, or skew by polyp size.

A sample is an image with its mask, never a pixel: masks are reduced to one number per image (the share of
polyp pixels) and binned by size, and those bins play the part that class labels play in ``partition``. Every
scheme is a pure function of (masks, num_clients, seed, ...), so the server and each client compute the same
split independently; each image belongs to exactly one client.
"""

from __future__ import annotations

import numpy as np
import torch

from fedrobust.data.partition import check_client_counts, partition_indices
from fedrobust.errors import ConfigError

MASK_SCHEMES = ("iid", "quantity", "dirichlet")


def _as_masks(masks: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(masks)
    if x.ndim == 3:  # N x H x W
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"masks must be N x 1 x H x W (or N x H x W), one per image, got shape {tuple(x.shape)}")
    return x


def foreground_fraction(masks: torch.Tensor) -> np.ndarray:
    """Share of polyp pixels (mask > 0.5) per image, shape (N,): the per-image summary partitions use."""
    x = _as_masks(masks)
    n, pixels = int(x.shape[0]), int(x.shape[2] * x.shape[3])
    if n == 0 or pixels == 0:
        return np.zeros(n, dtype=np.float64)
    return ((x > 0.5).flatten(1).sum(dim=1).double() / pixels).numpy()


def size_bins(fractions: np.ndarray, bins: int = 4) -> np.ndarray:
    """Quantile bin (0 = smallest polyps) of each image by rank, so bins hold equally many images (±1) even
    when many images share a fraction; ties are broken by index, so the result is deterministic."""
    if bins < 1:
        raise ConfigError(f"partition.bins: must be >= 1, got {bins}")
    fractions = np.asarray(fractions, dtype=np.float64).reshape(-1)
    n = len(fractions)
    ids = np.empty(n, dtype=np.int64)
    ids[np.argsort(fractions, kind="stable")] = (np.arange(n) * bins) // max(n, 1)
    return ids


def _quantity(n: int, num_clients: int, alpha: float, min_samples: int,
              rng: np.random.Generator) -> list[np.ndarray]:
    """Client sizes: ``min_samples`` each plus the rest shared by Dir(alpha) proportions (largest remainders
    round), so no redraw is needed to meet the minimum; images are dealt at random."""
    props = rng.dirichlet(np.full(num_clients, alpha))
    if not np.isfinite(props).all():
        raise ConfigError(f"partition.alpha: {alpha} is too small to draw client sizes from; raise it")
    spare = n - num_clients * min_samples
    share = props * spare
    extra = np.floor(share).astype(np.int64)
    short = spare - int(extra.sum())
    if short > 0:
        extra[np.argsort(-(share - extra), kind="stable")[:short]] += 1
    sizes = min_samples + extra
    return np.split(rng.permutation(n), np.cumsum(sizes)[:-1])


def partition_masks(
    masks: torch.Tensor,
    num_clients: int,
    scheme: str,
    *,
    seed: int = 0,
    alpha: float = 0.5,
    min_samples: int = 1,
    bins: int = 4,
) -> list[np.ndarray]:
    """One sorted index array per client covering every image exactly once.

    ``iid``: equal random shares. ``quantity``: client sizes ~ Dir(alpha) shares of N, each >= min_samples.
    ``dirichlet``: per polyp-size bin (``bins`` quantile bins), its images are shared with Dir(alpha)
    proportions, as ``partition``'s Dirichlet label skew does for classes.
    """
    x = _as_masks(masks)
    n = int(x.shape[0])
    if scheme not in MASK_SCHEMES:
        raise ConfigError(f"partition.scheme: got {scheme!r}; for segmentation choose one of {', '.join(MASK_SCHEMES)}")
    if min_samples < 0:
        raise ConfigError(f"partition.min_samples: must be >= 0, got {min_samples}")
    check_client_counts(n, num_clients, min_samples, "training images")
    if bins < 1:
        raise ConfigError(f"partition.bins: must be >= 1, got {bins}")
    if scheme != "iid" and alpha <= 0:
        raise ConfigError(f"partition.alpha: must be > 0, got {alpha}")
    if scheme == "iid":
        return partition_indices(np.zeros(n, dtype=np.int64), num_clients, "iid", seed=seed, min_samples=min_samples)
    if scheme == "quantity":
        parts = _quantity(n, num_clients, alpha, min_samples, np.random.default_rng(seed))
        return [np.sort(p.astype(np.int64)) for p in parts]
    bin_ids = size_bins(foreground_fraction(x), bins)
    return partition_indices(bin_ids, num_clients, "dirichlet", seed=seed, alpha=alpha, min_samples=min_samples)


def size_table(masks: torch.Tensor, parts: list[np.ndarray], bins: int = 4) -> np.ndarray:
    """Image counts per client (rows) and polyp-size bin (columns, smallest polyps first)."""
    bin_ids = size_bins(foreground_fraction(masks), bins)
    return np.stack([np.bincount(bin_ids[np.asarray(p, dtype=np.int64)], minlength=bins) for p in parts])
