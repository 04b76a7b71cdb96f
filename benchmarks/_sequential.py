"""The real round loop (``server.loop.run_federation``) without the Flower runtime: an in-process grid
whose client nodes are the ClientApp (``clients.app``) called directly, one message after the other.

No SuperLink, no Ray, no message transport: ``push_messages`` hands each message to the ClientApp with
the node's ``Context`` (``partition-id``/``num-partitions``, run config = the flattened fedrobust config,
as `fedrobust simulate` passes it) and keeps the reply for ``pull_messages``. Everything else (sampling,
the Flower strategy, screening, BatchNorm recalibration, evaluation, checkpoints, val selection,
summary.json) is the same code as under Flower; only the runtime differs. It is the bare baseline of
``federation_overhead.py`` and a quick way to try hyper-parameters:

    python benchmarks/_sequential.py --config configs/fed_breast_resnet18.toml --set augment.classic=flip,crop
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO
from uuid import uuid4

import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # clients, server and launcher when run as a script

from clients.app import app as client_app  # noqa: E402
from fedrobust.config import ExperimentConfig, from_flat, load_config, to_flat  # noqa: E402
from launcher.simulation import prepare_run  # noqa: E402
from server.loop import run_federation  # noqa: E402

RUN_ID = 1
NODE_BASE = 1000  # node id = NODE_BASE + partition id (a node id is not a partition id, as under Flower)


class InProcessGrid(Grid):
    """All client nodes of the federation in this process; a pushed message is handled at once."""

    def __init__(self, cfg: ExperimentConfig, app: Any = client_app) -> None:
        n = cfg.partition.num_clients
        flat = to_flat(cfg)
        self._app = app
        self._run = Run.create_empty(RUN_ID)
        # one Context per node, kept across messages (as Flower keeps a node's state between rounds)
        self._contexts = {
            NODE_BASE + p: Context(run_id=RUN_ID, node_id=NODE_BASE + p,
                                   node_config={"partition-id": p, "num-partitions": n},
                                   state=RecordDict(), run_config=dict(flat))
            for p in range(n)
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self._contexts)

    def _handle(self, msg: Message) -> Message:
        context = self._contexts.get(msg.metadata.dst_node_id)
        if context is None:
            return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason=f"no node {msg.metadata.dst_node_id}"),
                           reply_to=msg)
        try:
            return self._app(msg, context)
        except Exception as exc:  # Flower reports a ClientApp exception as an error reply, so do we
            print(f"ClientApp on node {context.node_id} raised {type(exc).__name__}: {exc}", file=sys.stderr)
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                 reason=f"{type(exc)}:<'{exc}'>"), reply_to=msg)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())  # the SuperLink's job under Flower
            reply = self._handle(msg)
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))


@contextlib.contextmanager
def server_identity() -> Iterator[None]:
    """The task identity Flower's runtime gives the ServerApp process (instruction messages carry it)."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SUPERLINK_NODE_ID, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def sequential_run(cfg: ExperimentConfig, log: TextIO | None = None) -> dict[str, Any]:
    """One federated run of ``cfg`` through ``server.loop.run_federation`` on an ``InProcessGrid``.

    Like `fedrobust simulate`: the run directory is created first (``run.dir`` set, config.toml
    written), the server and the clients read the config back from its flat form; the loop's lines
    go to ``log`` (default stderr). Returns ``{"summary": summary.json's content, "run": run dir}``.
    """
    cfg = copy.deepcopy(cfg)  # prepare_run sets run.dir: the caller's config stays reusable
    run = prepare_run(cfg, resume=bool(cfg.run.dir))
    with server_identity(), contextlib.redirect_stdout(log or sys.stderr):
        summary = run_federation(InProcessGrid(cfg), from_flat(to_flat(cfg)))  # the ServerApp's view
    return {"summary": summary, "run": run.path}


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
    p = argparse.ArgumentParser(description="one federated run through the real round loop, in process (no "
                                            "Flower runtime, no Ray); prints the val/test readings as JSON")
    p.add_argument("--config", default=str(ROOT / "configs/fed_breast_resnet18.toml"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out-dir", default=str(ROOT / "runs/seq"))
    p.add_argument("--threads", type=int, default=2, help="torch threads (= simulation.cpus_per_client, which "
                                                          "the ClientApp applies)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"run.out_dir='{args.out_dir}'", "sweep.enabled=false",
                                    f"simulation.cpus_per_client={args.threads}", *args.overrides])
    res = sequential_run(cfg)
    reading = val_reading(res["run"])
    print(json.dumps({"run": str(res["run"]), "overrides": args.overrides, **reading}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
