"""Flower's own strategies, chosen by name from the ``[federation]`` config."""

from __future__ import annotations

from typing import Any

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

from fedrobust.config import FederationSection

# fedrobust samples clients itself (seeded, by partition id) and hands the strategy exactly
# the nodes of the round, so the strategy takes all of them and waits for none.
_SAMPLING = {"fraction_train": 1.0, "fraction_evaluate": 1.0, "min_train_nodes": 1, "min_evaluate_nodes": 1,
             "min_available_nodes": 1}


def build_strategy(fed: FederationSection) -> Strategy:
    """The Flower strategy named by ``fed.strategy`` with its parameters from the config."""
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
    raise ValueError(f"unknown strategy {name!r}")  # config validation makes this unreachable


_STATE_KEYS = ("m_t", "v_t")  # server-side optimiser moments of the FedOpt family


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """What a resumed run needs to continue the strategy exactly (FedAdam's moments)."""
    return {k: getattr(strategy, k) for k in _STATE_KEYS if getattr(strategy, k, None) is not None}


def restore_strategy_state(strategy: Strategy, state: dict[str, Any]) -> None:
    for key, value in state.items():
        setattr(strategy, key, value)
