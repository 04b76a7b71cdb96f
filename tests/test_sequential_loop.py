"""The real round loop (server.loop) on the in-process grid of benchmarks/_sequential.py: no Flower
runtime, the ClientApp called directly. That it gives the same numbers as `fedrobust simulate`:
test_flower_app.py::test_in_process_loop_equals_the_simulation (it reuses that module's simulation)."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from fedrobust.config import load_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import _sequential  # noqa: E402

TINY = ["run.name=seq", "model.name=student", "partition.num_clients=3", "partition.min_samples=10",
        "federation.rounds=2", "federation.local_epochs=1", "augment.warmup_epochs=0", "distill.enabled=false",
        "export.enabled=false", "sweep.enabled=false"]


def _config(data_root: Path, out: Path, *extra: str):
    return load_config(REPO / "configs" / "quickstart.toml",
                       [*TINY, f"run.out_dir='{out}'", f"data.root='{data_root}'", *extra])


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=False)["model"]


@pytest.fixture(scope="module")
def two_runs(data_root, tmp_path_factory):
    """The same tiny federation twice, in process."""
    out = tmp_path_factory.mktemp("seq")
    cfg = _config(data_root, out)
    runs = []
    for _ in range(2):
        log = io.StringIO()
        res = _sequential.sequential_run(cfg, log=log)
        runs.append((res["run"], res["summary"], log.getvalue()))
    assert cfg.run.dir == ""  # the caller's config is reusable
    return runs


def _finite(value) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return not isinstance(value, float) or math.isfinite(value)


def test_in_process_run_writes_a_complete_run_directory(two_runs):
    run, summary, log = two_runs[0]
    names = {p.name for p in run.iterdir()}
    assert {"config.toml", "metrics.jsonl", "summary.json", "model.pt", "checkpoints"} <= names
    assert json.loads((run / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["kind"] == "federated" and summary["rounds"] == 2 and summary["clients"] == 3
    assert _finite(summary["test"]) and _finite(summary["test_fgsm"]) and 0 < summary["test"]["acc"] <= 1
    rounds = _metrics(run)
    assert [r["round"] for r in rounds] == [0, 1, 2] and rounds[0]["warmup_problems"] == 0
    for r in rounds[1:]:
        assert r["sampled"] == r["replies"] == 3 and r["failures"] == r["missing"] == 0
        assert r["num_examples"] == 546 and _finite(r["server"]) and _finite(r["clients"])
    assert "3 of 3 clients ready" in log and "round   2/2" in log and "final test acc" in log


def test_in_process_run_is_deterministic(two_runs):
    (a, sa, _), (b, sb, _) = two_runs
    assert a != b
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sa["test"] == sb["test"] and sa["test_fgsm"] == sb["test_fgsm"]
    assert [r["server"] for r in _metrics(a)] == [r["server"] for r in _metrics(b)]


def test_a_failing_client_is_an_error_reply(data_root, tmp_path):
    """A ClientApp exception comes back as an error reply (as Flower sends it), not as a raise."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

    from fedrobust.models.from_config import model_for

    cfg = _config(data_root, tmp_path, "faults.fail_partitions=[1]")
    grid = _sequential.InProcessGrid(cfg)
    nodes = grid.get_node_ids()
    assert len(nodes) == 3 and not set(nodes) & {0, 1, 2}
    content = RecordDict({"arrays": ArrayRecord(model_for(cfg).state_dict()),
                          "config": ConfigRecord({"server-round": 1})})
    with _sequential.server_identity():
        ids = grid.push_messages([Message(RecordDict({"config": ConfigRecord({"warm-up": False})}), nodes[0], "query"),
                                  Message(content, nodes[1], "train")])
    query, train = (grid.pull_messages([i])[0] for i in ids)
    assert query.content["info"]["partition-id"] == 0 and query.content["info"]["num-partitions"] == 3
    assert train.has_error() and "InjectedFault" in train.error.reason
    assert grid.pull_messages(ids) == []  # a reply is handed out once
