"""Flower ClientApp: translates Flower messages to ``fedrobust.federated.LocalClient`` calls.

The node's shard comes from ``context.node_config`` (``partition-id``, ``num-partitions``, and in
deployment optionally ``data-root``, or ``data-file``: the node's own dataset, used whole);
everything else from ``context.run_config``, the flattened fedrobust config.
"""

from __future__ import annotations

import functools
import time

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrobust.config import ExperimentConfig, from_flat
from fedrobust.federated import LocalClient

app = ClientApp()


@functools.lru_cache(maxsize=4)
def _config(items: frozenset) -> ExperimentConfig:
    return from_flat(dict(items))


def _client(context: Context) -> LocalClient:
    cfg = _config(frozenset(context.run_config.items()))
    node = context.node_config
    if node.get("data-root"):
        cfg.data.root = str(node["data-root"])
    torch.set_num_threads(max(1, int(cfg.simulation.cpus_per_client)))
    return LocalClient(cfg, int(node["partition-id"]), int(node["num-partitions"]),
                       data_file=str(node["data-file"]) if node.get("data-file") else None)


def _info(client: LocalClient) -> ConfigRecord:
    return ConfigRecord({"partition-id": client.partition_id, "alt-policy": client.uses_alt_policy})


@app.train()
def train(msg: Message, context: Context) -> Message:
    client = _client(context)
    config = msg.content["config"]
    state, metrics = client.train(msg.content["arrays"].to_torch_state_dict(), int(config["server-round"]),
                                  float(config.get("proximal-mu", 0.0)))
    content = RecordDict({"arrays": ArrayRecord(state), "metrics": MetricRecord(metrics), "info": _info(client)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    client = _client(context)
    metrics = client.evaluate(msg.content["arrays"].to_torch_state_dict())
    return Message(content=RecordDict({"metrics": MetricRecord(metrics), "info": _info(client)}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Which partition this node holds (the server samples clients by partition id). With
    ``warm-up`` set, the node also loads its shard and model now (before round 1); a failure to
    do so is reported in the reply, not raised, so the server still learns the partition."""
    node = context.node_config
    info = ConfigRecord({"partition-id": int(node["partition-id"]), "num-partitions": int(node["num-partitions"])})
    if msg.content["config"].get("warm-up", False):
        started = time.perf_counter()
        try:
            info["num-examples"] = _client(context).warm_up()
        except Exception as exc:  # the round that samples this node reports it as a failure
            info["warm-up-error"] = f"{type(exc).__name__}: {exc}"
        info["warm-up-seconds"] = time.perf_counter() - started  # data and model; the app's import is before
    return Message(content=RecordDict({"info": info}), reply_to=msg)
