"""The round loop: Flower's strategy aggregates; fedrobust samples, screens, evaluates and records.

We drive ``configure_train`` / push + pull / ``aggregate_train`` ourselves instead of
``Strategy.start`` so that a run can resume at round k+1 with the true round number, client
sampling is seeded by partition id (identical after a resume), and non-finite updates are
rejected before they reach the aggregator.

The loop needs only a ``Grid``: Flower's (simulation or deployment, via ``server.app``), or the
in-process one of ``benchmarks/_sequential.py`` that calls the ClientApp directly (no runtime).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedrobust.config import ExperimentConfig
from fedrobust.errors import FedrobustError
from fedrobust.federated import FederatedRun, alt_partitions, is_finite_state, min_replies, robust, sample_partitions
from fedrobust.federated.adversary import COLLUDING_KINDS, malicious_partitions, update_stats
from fedrobust.federated.server import describe_round
from fedrobust.pipeline import after_training
from server.strategies import (
    UpdateDefense,
    as_record,
    build_strategy,
    restore_strategy_state,
    selected_partitions,
    strategy_state,
)

PREFIX = "[fedrobust]"


def say(text: str) -> None:
    """Lines the `fedrobust simulate` launcher shows to the user (the rest is Flower's log)."""
    print(f"{PREFIX} {text}", flush=True)


class SubsetGrid:
    """A view of the grid that exposes only the nodes chosen for this round."""

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self._grid, self._nodes = grid, list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._nodes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def collect(grid: Grid, pending: set[str], timeout: float, interval: float = 0.2) -> list[Message]:
    """Replies to the pushed message ids ``pending``, polled until all arrived or ``timeout``."""
    pending = set(pending)
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while pending:
        got = list(grid.pull_messages(pending))
        replies += got
        pending -= {m.metadata.reply_to_message_id for m in got}
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return replies


def exchange(grid: Grid, messages: Iterable[Message], timeout: float) -> list[Message]:
    """``send_and_receive`` with a short poll: Flower's HTTP grid (deployment) sleeps 3 s between
    pulls, which adds up to 3 s to every round after the last reply has arrived."""
    return collect(grid, set(grid.push_messages(messages)), timeout)


def _query(node: int, warm_up: bool = False) -> Message:
    """Ask a node which partition it holds (answered by the ClientApp's query handler); with
    ``warm_up`` it also loads its shard and model."""
    return Message(content=RecordDict({"config": ConfigRecord({"warm-up": warm_up})}), message_type="query",
                   dst_node_id=node)


def _num_partitions(grid: Grid, node: int, timeout: float) -> int | None:
    for reply in exchange(grid, [_query(node)], timeout):
        if not reply.has_error():
            return int(reply.content["info"]["num-partitions"])
    return None


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """All ``count`` client nodes, after checking that the federation was sized for this config."""
    deadline = time.monotonic() + timeout
    checked = False
    while len(nodes := sorted(grid.get_node_ids())) < count:
        if nodes and not checked:
            checked = True
            seen = _num_partitions(grid, nodes[0], timeout)
            if seen is not None and seen != count:
                raise FedrobustError(
                    f"the federation has {seen} partitions but partition.num_clients = {count}; run "
                    f"`flwr run . --federation-config \"num-supernodes={count}\"` or set partition.num_clients={seen}")
        if time.monotonic() > deadline:
            raise FedrobustError(f"only {len(nodes)} of {count} client nodes connected within {timeout:.0f}s; "
                                 f"start more SuperNodes or raise simulation.startup_timeout")
        time.sleep(0.5)
    return nodes


def start_warm_up(grid: Grid, nodes: list[int]) -> set[str]:
    """Ask every node which partition it holds and to load its shard and model now: in simulation
    this starts the client actors' one-time work (importing the ClientApp, reading the data,
    building the model) while the server evaluates the initial model, so round 1 is a round like
    the others. Returns the pushed message ids for ``finish_warm_up``."""
    return set(grid.push_messages([_query(n, warm_up=True) for n in nodes]))


@dataclass
class WarmUp:
    """What the nodes answered to the warm-up query."""

    mapping: dict[int, int] = field(default_factory=dict)  # partition-id -> node-id
    problems: list[str] = field(default_factory=list)  # one line per node that could not warm up
    ready: int = 0  # nodes that loaded their shard and model
    loading_seconds: float = 0.0  # longest shard + model loading (the process and app start come before)


def finish_warm_up(grid: Grid, pending: set[str], timeout: float) -> WarmUp:
    """Collect the warm-up replies (see ``start_warm_up``)."""
    out = WarmUp()
    replies = collect(grid, pending, timeout)
    for reply in replies:
        if reply.has_error():
            out.problems.append(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
            continue
        info = reply.content["info"]
        out.mapping[int(info["partition-id"])] = reply.metadata.src_node_id
        out.loading_seconds = max(out.loading_seconds, float(info.get("warm-up-seconds", 0.0)))
        if "warm-up-error" in info:
            out.problems.append(f"partition {info['partition-id']}: {info['warm-up-error']}")
        else:
            out.ready += 1
    if len(replies) < len(pending):
        out.problems.append(f"{len(pending) - len(replies)} nodes did not answer within {timeout:.0f}s")
    return out


def _partition_of(reply: Message) -> int:
    return int(reply.content["info"]["partition-id"]) if "info" in reply.content else -1


def screen(replies: Iterable[Message]) -> tuple[list[Message], int, int]:
    """(finite successful replies sorted by partition id, failed replies, rejected non-finite)."""
    good, failed, rejected = [], 0, 0
    for reply in replies:
        if reply.has_error():
            failed += 1
            continue
        arrays = reply.content.array_records
        if arrays and not all(is_finite_state({k: a.numpy() for k, a in rec.items()}) for rec in arrays.values()):
            rejected += 1
            continue
        good.append(reply)
    good.sort(key=_partition_of)  # aggregation order fixed: sums are reproducible
    return good, failed, rejected


def _reply_metrics(reply: Message) -> Any:
    """The one MetricRecord a ClientApp's train reply carries."""
    return next(iter(reply.content.metric_records.values()))


def _said_malicious(reply: Message) -> bool:
    return bool(_reply_metrics(reply).get("malicious", 0))


def _sent(reply: Message) -> dict[str, Any]:
    return {k: a.numpy() for k, a in next(iter(reply.content.array_records.values())).items()}


def collude(cfg: ExperimentConfig, replies: list[Message], global_state: dict[str, Any]) -> None:
    """ATTACK SIMULATION of ``adversary.kind`` = alie / ipm: the updates of the clients that said they are
    malicious are replaced, in place, by the one update crafted from the honest replies of the round."""
    bad = [r for r in replies if _said_malicious(r)]
    honest = [_sent(r) for r in replies if not _said_malicious(r)]
    if not bad or len(honest) < 2:
        return
    a = cfg.adversary
    update = robust.colluding_update(a.kind, robust.flatten(honest, global_state), len(replies), len(bad), a.scale,
                                     a.alie_z)
    crafted = robust.unflatten(update, global_state, honest[0])
    for reply in bad:
        key = next(iter(reply.content.array_records))
        reply.content[key] = as_record(crafted)


def defense_record(strategy: Any, kept: list[int] | None, present: set[int],
                   malicious: list[int] | None) -> dict[str, Any]:
    """What the aggregator dropped or kept this round (our defenses; ``kept``: Krum, MultiKrum, Bulyan's
    selection), and with attackers present, the detection precision / recall of that against them."""
    out: dict[str, Any] = {}
    if isinstance(strategy, UpdateDefense):
        out["defense"] = strategy.last
        flagged = set(strategy.last.get("flagged", []))
    elif kept is not None:
        out["selected"] = kept
        flagged = present - set(kept)
    else:
        return out
    if malicious is not None:
        out["detection"] = robust.detection(flagged, set(malicious), present)
    return out


def _metrics(record: Any) -> dict[str, float]:
    return {k: float(v) for k, v in dict(record).items()} if record is not None else {}


def run_federation(grid: Grid, cfg: ExperimentConfig) -> dict[str, Any]:
    """All rounds of one federated run; returns the summary written to summary.json."""
    fed_cfg = cfg.federation
    nodes = wait_for_nodes(grid, cfg.partition.num_clients, cfg.simulation.startup_timeout)
    run = FederatedRun(cfg)
    done, state, saved_strategy = run.initial_state()
    strategy = build_strategy(fed_cfg, root=lambda g, rnd: run.trusted_update(
        {k: torch.from_numpy(v) for k, v in g.items()}, rnd))
    restore_strategy_state(strategy, saved_strategy)
    say(f"run directory {run.run.path.resolve()}")
    if done:
        say(f"resuming after round {done} of {fed_cfg.rounds}")
    alt = sorted(alt_partitions(cfg))
    if alt:
        say(f"partitions {alt} train with [alt_augment] mode={cfg.alt_augment.mode}")
    bad = sorted(malicious_partitions(cfg))
    if bad:
        say(f"ATTACK SIMULATION: partitions {bad} are malicious ([adversary] kind={cfg.adversary.kind}, "
            f"from round {cfg.adversary.start_round})")

    need = min_replies(cfg)
    partial = fed_cfg.fraction_train < 1.0 or fed_cfg.fraction_evaluate not in (0.0, 1.0)

    started = time.perf_counter()
    warming = start_warm_up(grid, nodes)
    server = run.evaluate(state) if done == 0 else None
    evaluated = time.perf_counter() - started
    warm = finish_warm_up(grid, warming, fed_cfg.round_timeout)
    warm_seconds = time.perf_counter() - started  # queries sent until every node answered (overlaps the evaluation)
    mapping = warm.mapping
    for line in warm.problems[:5]:
        say(f"warm-up: {line}")
    if len(warm.problems) > 5:
        say(f"warm-up: … and {len(warm.problems) - 5} more problems")
    say(f"{warm.ready} of {len(nodes)} clients ready ({warm_seconds:.1f}s)")
    if done == 0:
        run.run.log({"round": 0, "server": server, "seconds": evaluated, "warmup_seconds": warm_seconds,
                     "warmup_problems": len(warm.problems), "warmup_loading_seconds": warm.loading_seconds,
                     "time": time.time()})
    arrays = ArrayRecord(state)
    for rnd in range(done + 1, fed_cfg.rounds + 1):
        started = time.perf_counter()
        chosen = sample_partitions(cfg, rnd)
        round_nodes = [mapping[p] for p in chosen if p in mapping] if partial else nodes
        messages = list(strategy.configure_train(rnd, arrays, ConfigRecord({"server-round": rnd}),
                                                 SubsetGrid(grid, round_nodes)))
        replies = exchange(grid, messages, fed_cfg.round_timeout)
        good, failed, rejected = screen(replies)
        missing = len(messages) - len(replies)  # no answer within round_timeout
        if len(good) < need:
            raise FedrobustError(  # kept short: Flower's log stream cuts long lines
                f"round {rnd}: only {len(good)} of {len(messages)} clients sent a usable update, {need} needed "
                f"(federation.min_replies); {failed} failed or unreachable, {missing} silent, {rejected} non-finite")
        before = {k: v.numpy() for k, v in arrays.items()} if bad else {}  # the global weights the round started from
        if bad and cfg.adversary.kind in COLLUDING_KINDS:
            collude(cfg, good, before)
        # read before aggregate_train: Flower's robust strategies empty the replies' records as they aggregate
        sent = {_partition_of(r): _sent(r) for r in good} if bad else {}
        kept = selected_partitions(strategy, fed_cfg, good)
        new_arrays, train_metrics = strategy.aggregate_train(rnd, good) if good else (None, None)
        if new_arrays is not None:
            arrays, state = new_arrays, new_arrays.to_torch_state_dict()
            if fed_cfg.bn_recalibration != "none":  # before anyone (clients, server) evaluates it
                state = run.recalibrate(state)
                arrays = ArrayRecord(state)
        train_seconds = time.perf_counter() - started
        record: dict[str, Any] = {
            "sampled": len(round_nodes),
            "replies": len(good),
            "failures": failed,
            "missing": missing,
            "rejected_nonfinite": rejected,
            "aggregated": new_arrays is not None,
            "num_examples": int(sum(_reply_metrics(r)["num-examples"] for r in good)),
            "clients": _metrics(train_metrics),
        }
        if bad:
            record["malicious"] = sorted(_partition_of(r) for r in good if _said_malicious(r))
            record["updates"] = update_stats(before, sent, frozenset(record["malicious"]))
        record.update(defense_record(strategy, kept, {_partition_of(r) for r in good}, record.get("malicious")))
        if fed_cfg.fraction_evaluate > 0:
            eval_nodes = nodes if fed_cfg.fraction_evaluate == 1.0 else [
                mapping[p] for p in sample_partitions(cfg, rnd, fed_cfg.fraction_evaluate, stream=6007)
                if p in mapping]
            ev = strategy.configure_evaluate(rnd, arrays, ConfigRecord({"server-round": rnd}),
                                             SubsetGrid(grid, eval_nodes))
            ev_good, _, _ = screen(exchange(grid, ev, fed_cfg.round_timeout))
            record["clients_eval"] = _metrics(strategy.aggregate_evaluate(rnd, ev_good) if ev_good else None)
        record["server"] = run.evaluate(state)
        record["train_seconds"] = train_seconds  # sampling, local training, transfer, aggregation
        record["seconds"] = time.perf_counter() - started
        say(describe_round(rnd, fed_cfg.rounds, record, run.task))
        run.end_round(rnd, state, strategy_state(strategy), record)
    summary = run.finish(state)
    h = run.task.headline
    fg = "  ".join(f"{e}:{m[h]:.3f}" for e, m in summary["test_fgsm"].items())
    say(f"final test {run.task.describe(summary['test'])}; FGSM {h} by eps {fg}")
    summary["phase_seconds"] = after_training(cfg, run.run.path, say)  # as summary.json has it
    say(f"results in {run.run.path.resolve()}")
    return summary


