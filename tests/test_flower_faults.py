"""Simulations where something goes wrong: failing and NaN clients on a Ray cluster started beforehand, a
federation that cannot run, Ctrl-C, and a sign-flipping hospital against FedAvg and FedMedian."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from small_federation import REPO, in_process, metrics, simulate

from fedrobust.config import load_config


@pytest.fixture
def ray_cluster(tmp_path):
    """A Ray head started by `ray start` (as a user would), stopped afterwards; yields its address."""
    cluster_dir = tmp_path / "cluster"
    cluster_dir.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = str(Path(sys.executable).parent / "ray")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    pointer = Path("/tmp/ray/ray_current_cluster")  # `ray start` records itself here for later ray.init()
    saved = pointer.read_text() if pointer.exists() else None
    subprocess.run([ray, "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard=false",
                    "--disable-usage-stats"], cwd=cluster_dir, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
        status = subprocess.run([ray, "status", "--address", f"127.0.0.1:{port}"], capture_output=True, text=True,
                                env=env, timeout=60)
        assert status.returncode == 0, "the cluster must survive the simulation"
    finally:
        for p in psutil.process_iter():  # stop only the cluster this fixture started
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                if Path(p.cwd()) == cluster_dir:
                    p.kill()
        if saved is None:
            pointer.unlink(missing_ok=True)
        else:
            pointer.write_text(saved)


@pytest.mark.slow
def test_faults_and_sampling_on_an_existing_ray_cluster(data_root, tmp_path, ray_cluster):
    """5 clients, 80 % sampled (seeded, by partition): one sampled client raises, one sends NaN.
    The ServerApp also recalibrates BatchNorm on val, then distills and exports after the last round;
    clients store their optimizer state in context.state through Ray (its reuse: test_deploy.py).
    The run joins a Ray cluster started beforehand (`simulation.ray_address`) and leaves it running
    (one simulation for both: each costs ~40 s of start-up in a suite that must stay under 10 min)."""
    from fedrobust.federated import sample_partitions

    chosen = sample_partitions(load_config(None, ["partition.num_clients=5", "federation.fraction_train=0.8"]), 1)
    assert len(chosen) == 4
    out = tmp_path / "runs"
    result = simulate(data_root, out, f"simulation.ray_address='{ray_cluster}'",
                       "partition.num_clients=5", "federation.fraction_train=0.8",
                       "federation.fraction_evaluate=1.0", "federation.rounds=1",
                       f"faults.fail_partitions=[{chosen[0]}]", f"faults.nonfinite_partitions=[{chosen[1]}]",
                       "federation.bn_recalibration=val",
                       "distill.enabled=true", "distill.epochs=1",
                       "export.enabled=true", "export.teacher=false", "sweep.enabled=true", "sweep.max_images=32",
                       "sweep.eps=[0.01]", "sweep.attacks=['fgsm', 'pgd', 'square']", "sweep.square_queries=20",
                       "sweep.corruptions=false")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"Ray at {ray_cluster}" in result.stdout
    (run,) = out.iterdir()
    r = metrics(run)[1]
    assert (r["sampled"], r["replies"], r["failures"], r["rejected_nonfinite"]) == (4, 2, 1, 1)
    assert r["aggregated"] is True
    assert 0 <= r["clients_eval"]["client-test-acc"] <= 1  # every node evaluated on its test shard
    summary = json.loads((run / "summary.json").read_text())
    assert summary["failures"] == 1 and summary["rejected_nonfinite"] == 1
    final = torch.load(run / "model.pt", weights_only=False)["model"]
    assert all(bool(torch.isfinite(v.float()).all()) for v in final.values())
    assert (run / "distill" / "student.pt").is_file() and (run / "export" / "student.int8.onnx").is_file()
    assert "student test acc" in result.stdout
    assert (run / "sweep.csv").is_file() and (run / "report.md").is_file()  # the sweep ran in the ServerApp


def test_impossible_federation_fails_at_start_leaving_nothing(data_root, tmp_path, flower_processes):
    started = time.time()
    result = simulate(data_root, tmp_path, "federation.strategy=krum", "federation.num_malicious=1")
    assert result.returncode == 2 and "needs at least 5 clients" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0
    assert not any(tmp_path.iterdir())
    assert flower_processes(started) == []


@pytest.mark.slow
def test_ctrl_c_stops_everything(data_root, tmp_path, flower_processes):
    started = time.time()
    cmd = [sys.executable, "-m", "launcher", "simulate", "--config", str(REPO / "configs" / "quickstart.toml"),
           "--set", f"run.out_dir='{tmp_path}'", "--set", "model.name=student"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=dict(os.environ, FEDROBUST_DATA_ROOT=str(data_root)),
                            # a terminal's Ctrl-C, even if this test runs as a background job (SIGINT ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    for line in proc.stdout:
        if "run directory" in line:  # the ServerApp is running inside Flower + Ray
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err[-2000:]
    # Known gap (issue 3 note): now and then a flwr-simulation/raylet started in the moment of the
    # Ctrl-C escapes the launcher's scan and exits on its own a few seconds later; allow 15 s, no more.
    deadline = time.monotonic() + 15
    while (left := flower_processes(started)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == []


@pytest.mark.slow
def test_a_sign_flipping_hospital_breaks_fedavg_but_not_fedmedian(data_root, tmp_path):
    """Partition 2 of 3 sends -10 x its update every round. FedMedian, run on the real Ray backend, keeps
    learning; FedAvg with the same attacker (the in-process round loop, which equals the Flower simulation:
    test_flower_app.py::test_in_process_loop_equals_the_simulation) ends far worse."""
    attack = ["partition.scheme=iid", "adversary.kind=sign_flip", "adversary.partitions=[2]", "adversary.scale=10"]
    result = simulate(data_root, tmp_path / "median", "federation.strategy=fedmedian", *attack)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ATTACK SIMULATION: partitions [2] are malicious" in result.stdout
    (run,) = (tmp_path / "median").iterdir()
    rounds = metrics(run)[1:]
    assert all(r["malicious"] == [2] and r["updates"]["2"]["cos_honest"] < 0 for r in rounds)
    median = json.loads((run / "summary.json").read_text())["test"]

    fedavg = in_process(data_root, tmp_path / "avg", *attack)["summary"]["test"]
    assert median["acc"] - fedavg["acc"] > 0.15 and fedavg["loss"] > 1.5 * median["loss"]  # measured: 0.77 vs 0.47
