"""The same federated work as the Flower apps, as a bare in-process loop (no Flower runtime, no Ray).

``sequential_fedavg`` is the baseline of the overhead benchmark (Flower's own FedAvg arithmetic,
``aggregate_arrayrecords``). ``sequential_run`` is the whole server loop with any configured strategy,
BatchNorm recalibration and val selection, for quick hyper-parameter sweeps; only the runtime differs:

    python benchmarks/_sequential.py --config configs/fed_breast_resnet18.toml --set augment.classic=flip,crop
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedrobust.config import ExperimentConfig, load_config
from fedrobust.federated import LocalClient, sample_partitions
from fedrobust.federated.server import FederatedRun

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # server.strategies when run as a script


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


def _fake_task_identity() -> None:
    """Flower messages need a run/node/task identity; outside a Flower process there is none."""
    from flwr.supercore.task_identity import TaskIdentity

    for key in ("run_id", "node_id", "task_id"):
        try:
            getattr(TaskIdentity, key)
        except RuntimeError:
            setattr(TaskIdentity, key, 0 if key == "node_id" else 1)


class _Nodes:
    """The grid as the strategy sees it: node id = partition id + 1."""

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions

    def get_node_ids(self) -> list[int]:
        return [p + 1 for p in self.partitions]


def sequential_run(cfg: ExperimentConfig, log=print) -> dict[str, Any]:
    """The whole `server/loop.py` round loop in one process: the configured Flower strategy
    (configure_train / aggregate_train, so FedProx's mu and FedAdam's server optimiser are
    Flower's), BatchNorm recalibration, per-round evaluation, val selection, summary.json.
    Only the runtime (Ray, SuperLink, message transport, threads per client) differs."""
    from flwr.app import ConfigRecord, Message

    from fedrobust.federated.server import describe_round
    from server.strategies import build_strategy

    _fake_task_identity()
    fed = cfg.federation
    run = FederatedRun(cfg)
    _, state, _ = run.initial_state()
    strategy = build_strategy(fed)
    run.run.log({"round": 0, "server": run.evaluate(state)})
    arrays = ArrayRecord(state)
    optimizers: dict[int, dict] = {}  # partition id -> optimizer state kept between rounds
    for rnd in range(1, fed.rounds + 1):
        started = time.perf_counter()
        chosen = sample_partitions(cfg, rnd)
        messages = list(strategy.configure_train(rnd, arrays, ConfigRecord({"server-round": rnd}), _Nodes(chosen)))
        replies = []
        for msg in sorted(messages, key=lambda m: m.metadata.dst_node_id):
            config = msg.content["config"]
            pid = msg.metadata.dst_node_id - 1
            client = LocalClient(cfg, pid)
            new_state, metrics = client.train(msg.content["arrays"].to_torch_state_dict(), rnd,
                                              float(config.get("proximal-mu", 0.0)), optimizers.get(pid))
            if client.optimizer_state is not None:  # federation.keep_optimizer_state, as context.state does
                optimizers[pid] = client.optimizer_state
            replies.append(Message(content=RecordDict({"arrays": ArrayRecord(new_state),
                                                       "metrics": MetricRecord(metrics)}), reply_to=msg))
        new_arrays, train_metrics = strategy.aggregate_train(rnd, replies)
        arrays, state = new_arrays, new_arrays.to_torch_state_dict()
        if fed.bn_recalibration != "none":
            state = run.recalibrate(state)
            arrays = ArrayRecord(state)
        record: dict[str, Any] = {"sampled": len(chosen), "replies": len(replies),
                                  "clients": {k: float(v) for k, v in dict(train_metrics or {}).items()}}
        record["server"] = run.evaluate(state)
        record["seconds"] = time.perf_counter() - started
        log(describe_round(rnd, fed.rounds, record)
            + (f"  val acc {record['server']['val_acc']:.3f} auc {record['server']['val_auc']:.3f}"
               if "val_acc" in record["server"] else ""))
        run.end_round(rnd, state, {}, record)
    summary = run.finish(state)
    return {"summary": summary, "run": run.run.path}


def val_reading(run_dir: Path) -> dict[str, Any]:
    """Val and test figures of one finished run: at the selected round, at the last round, and the
    mean over the last 10 rounds (val is 78 images on BreastMNIST: single rounds are noisy)."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in lines if r.get("round", 0) >= 1 and "server" in r]
    summary = json.loads((run_dir / "summary.json").read_text())
    sel = summary.get("selected_round", summary["rounds"])
    at = {r["round"]: r["server"] for r in rounds}
    tail = [r["server"] for r in rounds[-10:]]
    mean = lambda key: sum(s.get(key, float("nan")) for s in tail) / len(tail)  # noqa: E731
    return {
        "selected_round": sel,
        "sel_val_auc": at[sel].get("val_auc"), "sel_val_acc": at[sel].get("val_acc"),
        "sel_test_acc": summary["test"]["acc"], "sel_test_auc": summary["test"]["auc"],
        "last_val_acc": rounds[-1]["server"].get("val_acc"), "last_test_acc": rounds[-1]["server"]["acc"],
        "tail10_val_acc": mean("val_acc"), "tail10_val_auc": mean("val_auc"), "tail10_test_acc": mean("acc"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description="one federated run through the bare sequential loop")
    p.add_argument("--config", default=str(ROOT / "configs/fed_breast_resnet18.toml"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out-dir", default=str(ROOT / "runs/seq"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"run.out_dir='{args.out_dir}'", "sweep.enabled=false", *args.overrides])
    res = sequential_run(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    reading = val_reading(res["run"])
    print(json.dumps({"run": str(res["run"]), "overrides": args.overrides, **reading}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
