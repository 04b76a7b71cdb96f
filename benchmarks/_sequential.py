"""The same federated work as the Flower apps, as a bare in-process loop (no Flower runtime, no Ray).

Used as the baseline of the overhead benchmark and for quick hyper-parameter sweeps. Aggregation
uses Flower's own FedAvg arithmetic (``aggregate_arrayrecords``) so only the runtime differs.
"""

from __future__ import annotations

import time
from typing import Any

from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedrobust.config import ExperimentConfig
from fedrobust.federated import LocalClient, sample_partitions
from fedrobust.federated.server import FederatedRun


def sequential_fedavg(cfg: ExperimentConfig, evaluate_every: int = 1, log=print) -> dict[str, Any]:
    """FedAvg rounds with every sampled client trained one after the other in this process."""
    run = FederatedRun(cfg)
    _, state, _ = run.initial_state()
    history, train_seconds = [], 0.0
    for rnd in range(1, cfg.federation.rounds + 1):
        started = time.perf_counter()
        replies = []
        for pid in sample_partitions(cfg, rnd):
            new_state, metrics = LocalClient(cfg, pid).train(state, rnd)
            replies.append(RecordDict({"arrays": ArrayRecord(new_state), "metrics": MetricRecord(metrics)}))
        state = aggregate_arrayrecords(replies, "num-examples").to_torch_state_dict()
        seconds = time.perf_counter() - started
        train_seconds += seconds
        record: dict[str, Any] = {"round": rnd, "seconds": seconds}
        if rnd % evaluate_every == 0 or rnd == cfg.federation.rounds:
            record["server"] = run.evaluate(state)
            log(f"round {rnd}: acc {record['server']['acc']:.3f} auc {record['server']['auc']:.3f} "
                f"fgsm {record['server']['fgsm_acc']:.3f} ({seconds:.1f}s)")
        history.append(record)
    return {"history": history, "state": state, "train_seconds": train_seconds, "run": run}
