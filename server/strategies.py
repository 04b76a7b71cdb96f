"""Flower's own strategies, chosen by name from the ``[federation]`` config, and FedAvg with the update
defenses Flower lacks (norm clipping, centered clipping, FLTrust: ``fedrobust.federated.robust``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)
from flwr.serverapp.strategy.multikrum import select_multikrum

from fedrobust.config import FederationSection
from fedrobust.federated import robust

# fedrobust samples clients itself (seeded, by partition id) and hands the strategy exactly
# the nodes of the round, so the strategy takes all of them and waits for none.
_SAMPLING = {"fraction_train": 1.0, "fraction_evaluate": 1.0, "min_train_nodes": 1, "min_evaluate_nodes": 1,
             "min_available_nodes": 1}


Root = Callable[[dict[str, np.ndarray], int], dict[str, Any]]  # (global state, round) -> trusted weights


def as_record(state: dict[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord of numpy weights, in the state dict's key order."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})


def _partition(content: Any) -> int:
    return int(content["info"]["partition-id"]) if "info" in content else -1


class UpdateDefense(FedAvg):
    """FedAvg whose averaging step is a robust rule on the clients' updates (sent − global). It keeps the
    global weights of the round from ``configure_train`` and, after each aggregation, what it did in
    ``last`` (the partitions it dropped or clipped and each one's weight) for metrics.jsonl."""

    def __init__(self, rule: str, clip_norm: float = 0.0, root: Root | None = None) -> None:
        super().__init__(**_SAMPLING)
        self.rule, self.clip_norm, self.root = rule, clip_norm, root
        self.center: np.ndarray | None = None  # centered clipping: the previous aggregate update
        self._global: dict[str, np.ndarray] = {}
        self.last: dict[str, Any] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: Any, grid: Any) -> Iterable[Message]:
        self._global = {k: v.numpy() for k, v in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [m.content for m in valid]
        sent = [{k: a.numpy() for k, a in c[self.arrayrecord_key].items()} for c in contents]
        updates = robust.flatten(sent, self._global)
        if self.rule == "normclip":
            weights = np.array([float(next(iter(c.metric_records.values()))[self.weighted_by_key]) for c in contents])
            out = robust.norm_clip(updates, weights, self.clip_norm)
        elif self.rule == "centeredclip":
            out = robust.centered_clip(updates, self.center, self.clip_norm)
            self.center = out.update
        else:
            assert self.root is not None, "fltrust needs the server's trusted update"
            trusted = self.root(self._global, server_round)
            out = robust.fltrust(updates, robust.flatten([trusted], self._global)[0])
        pids = [_partition(c) for c in contents]
        self.last = {"flagged": sorted(pids[i] for i in out.flagged),
                     "weights": {str(p): w for p, w in zip(pids, out.scores, strict=True)}}
        state = robust.unflatten(out.update, self._global, sent[0])
        return as_record(state), self.train_metrics_aggr_fn(contents, self.weighted_by_key)


def selected_partitions(strategy: Strategy, fed: FederationSection, replies: list[Message]) -> list[int] | None:
    """The partitions a selecting aggregator (Krum, MultiKrum, Bulyan) keeps this round, by Flower's own
    selection functions on the same replies; None for coordinate-wise ones (median, trimmed mean, FedAvg)."""
    contents = [m.content for m in replies]
    if fed.strategy in ("krum", "multikrum"):
        k = 1 if fed.strategy == "krum" else fed.multikrum_select
        chosen = select_multikrum(contents, num_malicious_nodes=fed.num_malicious, num_nodes_to_select=k)
    elif fed.strategy == "bulyan" and len(contents) >= 4 * fed.num_malicious + 3:
        assert isinstance(strategy, Bulyan)
        chosen = strategy.selection_rule(contents, fed.num_malicious, len(contents) - 2 * fed.num_malicious)
    else:
        return None
    return sorted(_partition(c) for c in chosen)


def build_strategy(fed: FederationSection, root: Root | None = None) -> Strategy:
    """The strategy named by ``fed.strategy`` with its parameters from the config; ``root`` is FLTrust's
    trusted update (the server's own training on its val split)."""
    name = fed.strategy
    if name == "fedavg":
        return FedAvg(**_SAMPLING)
    if name == "fedprox":
        return FedProx(**_SAMPLING, proximal_mu=fed.proximal_mu)
    if name == "fedadam":
        return FedAdam(**_SAMPLING, eta=fed.server_lr, tau=fed.server_tau)
    if name == "fedmedian":
        return FedMedian(**_SAMPLING)
    if name == "fedtrimmedavg":
        return FedTrimmedAvg(**_SAMPLING, beta=fed.trimmed_beta)
    if name == "krum":
        return Krum(**_SAMPLING, num_malicious_nodes=fed.num_malicious)
    if name == "multikrum":
        return MultiKrum(**_SAMPLING, num_malicious_nodes=fed.num_malicious,
                         num_nodes_to_select=fed.multikrum_select)
    if name == "bulyan":
        return Bulyan(**_SAMPLING, num_malicious_nodes=fed.num_malicious)
    if name in ("normclip", "centeredclip", "fltrust"):
        return UpdateDefense(name, fed.clip_norm, root)
    raise ValueError(f"unknown strategy {name!r}")  # config validation makes this unreachable


_STATE_KEYS = ("m_t", "v_t", "center")  # FedOpt's server-side moments; centered clipping's last aggregate


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """What a resumed run needs to continue the strategy exactly (FedAdam's moments)."""
    return {k: getattr(strategy, k) for k in _STATE_KEYS if getattr(strategy, k, None) is not None}


def restore_strategy_state(strategy: Strategy, state: dict[str, Any]) -> None:
    for key, value in state.items():
        setattr(strategy, key, value)
