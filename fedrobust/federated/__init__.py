"""Federated learning, Flower-free: what a client does with its shard and what the server does
with the global model. ``clients/`` and ``server/`` wire these into Flower apps."""

from fedrobust.federated.client import LocalClient
from fedrobust.federated.plan import alt_partitions, check_federation, min_replies, sample_partitions
from fedrobust.federated.server import FederatedRun, is_finite_state

__all__ = ["FederatedRun", "LocalClient", "alt_partitions", "check_federation", "is_finite_state", "min_replies",
           "sample_partitions"]
