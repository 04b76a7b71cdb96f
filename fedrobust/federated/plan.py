"""Who does what in a federation: sampling, heterogeneous policies, and start-up checks.

Everything here is a pure function of the config (and round), so the server and every client
agree without talking, and a resumed run makes the same choices as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np

from fedrobust.config import ExperimentConfig
from fedrobust.errors import ConfigError
from fedrobust.tasks.base import Split

# Flower's robust aggregators need enough updates per round for their Byzantine bound f.
_MIN_REPLIES = {
    "krum": lambda f: 2 * f + 3,
    "multikrum": lambda f: 2 * f + 3,
    "bulyan": lambda f: 4 * f + 3,
}


def sample_size(cfg: ExperimentConfig, fraction: float | None = None) -> int:
    share = cfg.federation.fraction_train if fraction is None else fraction
    return max(1, round(share * cfg.partition.num_clients))


def sample_partitions(cfg: ExperimentConfig, server_round: int, fraction: float | None = None,
                      stream: int = 7919) -> list[int]:
    """Partition ids of ``server_round`` (``fraction_train`` unless given): seeded by (seed, round), sorted."""
    n = cfg.partition.num_clients
    k = sample_size(cfg, fraction)
    if k >= n:
        return list(range(n))
    rng = np.random.default_rng([cfg.run.seed, server_round, stream])
    return sorted(int(i) for i in rng.choice(n, size=k, replace=False))


def alt_partitions(cfg: ExperimentConfig) -> set[int]:
    """Partitions that train with ``[alt_augment]`` (e.g. hospitals that cannot afford adversarial training)."""
    n = cfg.partition.num_clients
    k = round(cfg.federation.alt_fraction * n)
    order = np.random.default_rng([cfg.run.seed, 104729]).permutation(n)
    return {int(i) for i in order[:k]}


def local_seed(cfg: ExperimentConfig, server_round: int, partition_id: int) -> int:
    """Seed of one client's local update: differs per round and client, fixed across reruns."""
    return int(np.random.default_rng([cfg.run.seed, server_round, partition_id]).integers(2**31))


def min_replies(cfg: ExperimentConfig) -> int:
    """Usable updates a round needs: ``federation.min_replies``, and the robust aggregator's bound."""
    fed = cfg.federation
    bound = _MIN_REPLIES.get(fed.strategy)
    return max(fed.min_replies, bound(fed.num_malicious) if bound else 1)


def check_federation(cfg: ExperimentConfig, train: Split) -> None:
    """Fail before anything starts if the federation cannot work as configured (``train``: the training split)."""
    from fedrobust.tasks.registry import task_for

    fed, n = cfg.federation, cfg.partition.num_clients
    task_for(cfg).partition(train, cfg.partition, cfg.run.seed)
    k = sample_size(cfg)
    need = _MIN_REPLIES.get(fed.strategy)
    if need is not None and k < need(fed.num_malicious):
        raise ConfigError(
            f"federation.strategy: {fed.strategy} with num_malicious={fed.num_malicious} needs at least "
            f"{need(fed.num_malicious)} clients per round, but {k} are sampled "
            f"({n} clients x fraction_train {fed.fraction_train}); add clients or lower num_malicious"
        )
    if fed.min_replies > k:
        raise ConfigError(f"federation.min_replies: {fed.min_replies} exceeds the {k} clients sampled per round "
                          f"({n} clients x fraction_train {fed.fraction_train})")
    if fed.strategy == "multikrum" and fed.multikrum_select > k:
        raise ConfigError(f"federation.multikrum_select: {fed.multikrum_select} exceeds the {k} clients per round")
    if fed.strategy == "fedtrimmedavg" and int(fed.trimmed_beta * k) * 2 >= k:
        raise ConfigError(f"federation.trimmed_beta: trimming {fed.trimmed_beta} from each end of {k} updates "
                          f"leaves none; lower trimmed_beta or sample more clients")
