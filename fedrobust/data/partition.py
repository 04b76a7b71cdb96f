"""Split a training set among federated clients: IID, Dirichlet label skew, or label shards.

Every scheme is a pure function of (labels, num_clients, seed, ...): the server and each client
compute the same split independently, so shards never overlap and each training sample belongs
to exactly one client.
"""

from __future__ import annotations

import numpy as np

from fedrobust.errors import ConfigError

SCHEMES = ("iid", "dirichlet", "shards")  # the one list of partition schemes (config, CLI, here)
_MAX_DIRICHLET_TRIES = 1000


def _check_min(parts: list[np.ndarray], min_samples: int) -> bool:
    return min(len(p) for p in parts) >= min_samples


def _iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return list(np.array_split(rng.permutation(len(labels)), num_clients))


def _dirichlet(labels: np.ndarray, num_clients: int, alpha: float, min_samples: int,
               rng: np.random.Generator) -> list[np.ndarray]:
    """Per class, share its samples among clients with proportions ~ Dir(alpha).

    Redraws until every client has ``min_samples`` (the usual practice, e.g. in FedLab/Flower
    Datasets' DirichletPartitioner).
    """
    classes = np.unique(labels)
    for _ in range(_MAX_DIRICHLET_TRIES):
        buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            props = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for client, part in enumerate(np.split(idx, cuts)):
                buckets[client].append(part)
        parts = [np.concatenate(b) for b in buckets]
        if _check_min(parts, min_samples):
            return parts
    raise ConfigError(
        f"partition: Dirichlet(alpha={alpha}) could not give each of {num_clients} clients "
        f"{min_samples} samples in {_MAX_DIRICHLET_TRIES} draws; raise partition.alpha, lower "
        f"partition.min_samples or use fewer clients"
    )


def _shards(labels: np.ndarray, num_clients: int, labels_per_client: int,
            rng: np.random.Generator) -> list[np.ndarray]:
    """Each client holds exactly ``k`` labels (all of them if k >= #classes).

    Labels are dealt round-robin over a shuffled class order so every class has a holder; each
    class's samples are then split evenly among the clients holding it.
    """
    classes = rng.permutation(np.unique(labels))
    k = min(labels_per_client, len(classes))
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for client in range(num_clients):
        for j in range(k):
            holders[int(classes[(client * k + j) % len(classes)])].append(client)
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c, owners in holders.items():
        idx = rng.permutation(np.flatnonzero(labels == c))
        if not owners:  # fewer client slots than classes: give the class to a random client
            owners = [int(rng.integers(num_clients))]
        for owner, part in zip(owners, np.array_split(idx, len(owners)), strict=True):
            buckets[owner].append(part)
    return [np.concatenate(b) if b else np.empty(0, dtype=np.int64) for b in buckets]


def check_client_counts(n: int, num_clients: int, min_samples: int, what: str = "training samples") -> None:
    """Refuse, in one line, a federation that ``n`` samples cannot fill: every scheme's first check."""
    if num_clients < 1:
        raise ConfigError(f"partition.num_clients: must be >= 1, got {num_clients}")
    if num_clients * min_samples > n:
        raise ConfigError(
            f"partition: {num_clients} clients x {min_samples} min samples exceeds the {n} "
            f"{what}; use at most {n // max(min_samples, 1)} clients or lower partition.min_samples"
        )


def partition_indices(
    labels: np.ndarray,
    num_clients: int,
    scheme: str = "iid",
    *,
    seed: int = 0,
    alpha: float = 0.5,
    labels_per_client: int = 1,
    min_samples: int = 1,
) -> list[np.ndarray]:
    """Return one sorted index array per client; together they cover every sample exactly once."""
    labels = np.asarray(labels).reshape(-1)
    check_client_counts(len(labels), num_clients, min_samples)
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = _iid(labels, num_clients, rng)
    elif scheme == "dirichlet":
        if alpha <= 0:
            raise ConfigError(f"partition.alpha: must be > 0, got {alpha}")
        parts = _dirichlet(labels, num_clients, alpha, min_samples, rng)
    elif scheme == "shards":
        parts = _shards(labels, num_clients, labels_per_client, rng)
    else:
        raise ConfigError(f"partition.scheme: got {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if not _check_min(parts, min_samples):
        small = min(range(num_clients), key=lambda i: len(parts[i]))
        raise ConfigError(
            f"partition: client {small} gets {len(parts[small])} samples, fewer than "
            f"partition.min_samples={min_samples}; use fewer clients or another scheme"
        )
    return [np.sort(p.astype(np.int64)) for p in parts]


def label_table(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Counts per client (rows) and class (columns)."""
    labels = np.asarray(labels).reshape(-1)
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
