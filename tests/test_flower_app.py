"""The Flower side: app wiring, strategies by name, and a real simulation through Ray: its run directory, its
equality with the in-process loop, concurrent runs and resume. What goes wrong: test_flower_faults.py."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psutil
import pytest
import torch
from small_federation import REPO, in_process, launch, metrics, simulate

from fedrobust.config import load_config, to_flat


def test_pyproject_app_config_is_the_quickstart():
    app = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "server.app:app", "clientapp": "clients.app:app"}
    flat = {f"{s}.{k}": v for s, table in app["config"].items() for k, v in table.items()}
    assert flat == to_flat(load_config(REPO / "configs" / "quickstart.toml"))


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum",
                                  "multikrum", "bulyan"])
def test_strategies_by_name_are_flowers_own(name):
    from flwr.serverapp.strategy import Strategy

    from server.strategies import build_strategy

    cfg = load_config(None, [f"federation.strategy={name}", "federation.proximal_mu=0.5"])
    strategy = build_strategy(cfg.federation)
    assert isinstance(strategy, Strategy) and type(strategy).__module__.startswith("flwr.serverapp.strategy")
    if name == "fedprox":
        assert strategy.proximal_mu == 0.5


@pytest.fixture(scope="module")
def full_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    started = time.time()
    result = simulate(data_root, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = out.iterdir()
    return run, result, started


@pytest.mark.slow
def test_simulation_writes_a_complete_run_directory(full_run):
    run, result, _ = full_run
    names = {p.name for p in run.iterdir()}
    assert {"config.toml", "metrics.jsonl", "summary.json", "model.pt", "checkpoints"} <= names
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "round_0001.pt", "round_0002.pt"]
    rounds = metrics(run)
    assert [r["round"] for r in rounds] == [0, 1, 2]
    # every client loaded its app, shard and model before round 1, while the server evaluated round 0
    assert rounds[0]["warmup_problems"] == 0 and rounds[0]["warmup_seconds"] >= rounds[0]["seconds"] > 0
    assert 0 < rounds[0]["warmup_loading_seconds"] < rounds[0]["warmup_seconds"]
    for r in rounds[1:]:
        assert r["sampled"] == r["replies"] == 3 and r["failures"] == 0 and r["rejected_nonfinite"] == 0
        assert r["num_examples"] == 546 and 0 < r["clients"]["adv-share"] < 1
        assert 0 <= r["server"]["acc"] <= 1 and r["server"]["fgsm_acc"] <= r["server"]["acc"] + 1e-9
        assert 0 <= r["server"]["val_auc"] <= 1  # quickstart selects the final model on val
    assert rounds[2]["clients"]["optimizer-steps"] == rounds[1]["clients"]["optimizer-steps"]  # fresh Adam each round
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "federated" and summary["rounds"] == 2 and summary["clients"] == 3
    assert "round   2/2" in result.stdout and str(run) in result.stdout and "3 of 3 clients ready" in result.stdout


def test_in_process_loop_equals_the_simulation(full_run, data_root, tmp_path):
    """Only the runtime differs: the in-process round loop (which the benchmarks use) on full_run's config gives
    the same final weights and test figures as `fedrobust simulate` through Flower and Ray."""
    sim = full_run[0]
    res = in_process(data_root, tmp_path)
    ws = torch.load(sim / "model.pt", weights_only=False)["model"]
    wi = torch.load(res["run"] / "model.pt", weights_only=False)["model"]
    assert ws.keys() == wi.keys() and all(torch.equal(ws[k], wi[k]) for k in wi)
    assert json.loads((sim / "summary.json").read_text())["test"] == res["summary"]["test"]


def test_global_model_changed(full_run):
    run, _, _ = full_run
    first = torch.load(run / "checkpoints" / "round_0001.pt", weights_only=False)["model"]
    second = torch.load(run / "checkpoints" / "round_0002.pt", weights_only=False)["model"]
    final = torch.load(run / "model.pt", weights_only=False)["model"]
    from fedrobust.models import build_model

    torch.manual_seed(0)
    init = build_model("student", 1, 2, 28).state_dict()
    assert not all(torch.equal(init[k], first[k].to(init[k].dtype)) for k in init)
    assert not all(torch.equal(first[k], second[k]) for k in second)
    assert not all(torch.equal(init[k], final[k].to(init[k].dtype)) for k in init)


def test_no_flower_or_ray_process_survives(full_run, flower_processes):
    _, _, started = full_run
    assert flower_processes(started) == []


def _marked(marker: str) -> list[int]:
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            if p.environ().get("FEDROBUST_LAUNCH_ID") == marker:
                found.append(p.pid)
    return found


@pytest.mark.slow
def test_concurrent_runs_a_killed_launcher_and_one_writer(data_root, tmp_path, full_run):
    """Two simulations at once each talk to their own SuperLink; SIGKILL on one launcher ends every
    process it started and removes its temporary folders; its run directory has one writer at a time;
    the other stops cleanly after round 1 (faults.stop_after_round) with a line saying how to resume;
    and --resume of the killed one gives the result of an uninterrupted run (full_run has the same config)."""
    victim = launch(data_root, tmp_path / "victim")
    time.sleep(1.5)
    other = launch(data_root, tmp_path / "other", "run.name=other", "faults.stop_after_round=1")
    assert victim.stdout is not None
    port = marker = workdir = run = None
    for line in victim.stdout:  # the launcher's own line, printed once it holds the run directory
        if line.startswith("SuperLink pid"):
            pid, port = int(line.split()[2]), line.split()[4].rstrip(";")
            link = psutil.Process(pid)
            marker, workdir = link.environ()["FEDROBUST_LAUNCH_ID"], Path(link.cwd())
            (run,) = (tmp_path / "victim").iterdir()
            break
    assert port and marker and run is not None, "the victim never started its run"
    busy = subprocess.run([sys.executable, "-m", "launcher", "export", str(run)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)  # a second writer while the first lives
    assert busy.returncode == 2 and f"in use by PID {victim.pid} (fedrobust simulate)" in busy.stderr, busy.stderr
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "round_0001.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the file system, not the streamed log (which lags): kill early in round 2
    assert victim.poll() is None and not (run / "summary.json").exists()
    victim.kill()  # SIGKILL: no handler of ours runs
    victim.wait(timeout=10)
    deadline = time.monotonic() + 30
    while ((left := _marked(marker)) or workdir.exists()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], f"processes of the killed launch still run: {left}"
    assert not workdir.exists(), "the killed launch's temporary folder is left behind"
    out, _ = other.communicate(timeout=400)
    assert other.returncode == 2 and "--resume" in out, out[-2000:]
    (other_run,) = (tmp_path / "other").iterdir()
    assert not (other_run / "summary.json").exists()
    assert [r["round"] for r in metrics(other_run)] == [0, 1]
    other_port = next(line.split()[4].rstrip(";") for line in out.splitlines() if line.startswith("SuperLink pid"))
    assert other_port != port
    assert f"({other_port})" in (other_run / "flower.log").read_text()
    assert f"({port})" not in (other_run / "flower.log").read_text()
    assert f"({other_port})" not in (run / "flower.log").read_text()
    resumed = simulate(data_root, tmp_path, resume=run)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resuming after round 1" in resumed.stdout
    assert [r["round"] for r in metrics(run)] == [0, 1, 2]
    ours = torch.load(run / "model.pt", weights_only=False)["model"]
    reference = torch.load(full_run[0] / "model.pt", weights_only=False)["model"]
    for k in reference:
        torch.testing.assert_close(ours[k], reference[k], rtol=0, atol=1e-6)
    a = json.loads((run / "summary.json").read_text())["test"]
    b = json.loads((full_run[0] / "summary.json").read_text())["test"]
    assert a["acc"] == b["acc"]


