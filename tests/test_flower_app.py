"""The Flower side: app wiring, strategies by name, and real simulations through Ray."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psutil
import pytest
import torch

from fedrobust.config import load_config, to_flat

REPO = Path(__file__).resolve().parents[1]
# the small federation every simulation here runs (3 hospitals, 2 rounds, the student), unless a test says more
TINY = ("run.name=sim", "model.name=student", "partition.num_clients=3", "partition.min_samples=10",
        "federation.rounds=2", "federation.local_epochs=1", "augment.warmup_epochs=0", "distill.enabled=false",
        "export.enabled=false", "sweep.enabled=false")


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


def _simulate(data_root, out_dir: Path, *overrides: str, resume: Path | None = None, timeout: float = 400):
    cmd = [sys.executable, "-m", "launcher", "simulate"]
    if resume:
        cmd += ["--resume", str(resume)]
    else:
        cmd += ["--config", str(REPO / "configs" / "quickstart.toml")]
        overrides = (*TINY, f"run.out_dir='{out_dir}'", *overrides)
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, FEDROBUST_DATA_ROOT=str(data_root))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    started = time.time()
    result = _simulate(data_root, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = out.iterdir()
    return run, result, started


@pytest.mark.slow
def test_simulation_writes_a_complete_run_directory(full_run):
    run, result, _ = full_run
    names = {p.name for p in run.iterdir()}
    assert {"config.toml", "metrics.jsonl", "summary.json", "model.pt", "checkpoints"} <= names
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "round_0001.pt", "round_0002.pt"]
    rounds = _metrics(run)
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


def _in_process(data_root, out_dir: Path, *overrides: str) -> dict:
    """`_simulate`'s federation through benchmarks/_sequential.py: the real round loop and ClientApp, no runtime."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import _sequential

    cfg = load_config(REPO / "configs" / "quickstart.toml",
                      [*TINY, f"run.out_dir='{out_dir}'", f"data.root='{data_root}'", *overrides])
    return _sequential.sequential_run(cfg, log=io.StringIO())


def test_in_process_loop_equals_the_simulation(full_run, data_root, tmp_path):
    """Only the runtime differs: the in-process round loop (which the benchmarks use) on full_run's config gives
    the same final weights and test figures as `fedrobust simulate` through Flower and Ray."""
    sim = full_run[0]
    res = _in_process(data_root, tmp_path)
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
    result = _simulate(data_root, out, f"simulation.ray_address='{ray_cluster}'",
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
    r = _metrics(run)[1]
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
    result = _simulate(data_root, tmp_path, "federation.strategy=krum", "federation.num_malicious=1")
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


def _launch(data_root, out_dir: Path, *overrides: str) -> subprocess.Popen:
    """`_simulate`'s command, started in the background (stdout line-buffered for the test to read)."""
    cmd = [sys.executable, "-m", "launcher", "simulate", "--config", str(REPO / "configs" / "quickstart.toml")]
    for o in (*TINY, f"run.out_dir='{out_dir}'", *overrides):
        cmd += ["--set", o]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env=dict(os.environ, FEDROBUST_DATA_ROOT=str(data_root), PYTHONUNBUFFERED="1"))


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
    victim = _launch(data_root, tmp_path / "victim")
    time.sleep(1.5)
    other = _launch(data_root, tmp_path / "other", "run.name=other", "faults.stop_after_round=1")
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
    assert [r["round"] for r in _metrics(other_run)] == [0, 1]
    other_port = next(line.split()[4].rstrip(";") for line in out.splitlines() if line.startswith("SuperLink pid"))
    assert other_port != port
    assert f"({other_port})" in (other_run / "flower.log").read_text()
    assert f"({port})" not in (other_run / "flower.log").read_text()
    assert f"({other_port})" not in (run / "flower.log").read_text()
    resumed = _simulate(data_root, tmp_path, resume=run)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resuming after round 1" in resumed.stdout
    assert [r["round"] for r in _metrics(run)] == [0, 1, 2]
    ours = torch.load(run / "model.pt", weights_only=False)["model"]
    reference = torch.load(full_run[0] / "model.pt", weights_only=False)["model"]
    for k in reference:
        torch.testing.assert_close(ours[k], reference[k], rtol=0, atol=1e-6)
    a = json.loads((run / "summary.json").read_text())["test"]
    b = json.loads((full_run[0] / "summary.json").read_text())["test"]
    assert a["acc"] == b["acc"]


@pytest.mark.slow
def test_a_sign_flipping_hospital_breaks_fedavg_but_not_fedmedian(data_root, tmp_path):
    """Partition 2 of 3 sends -10 x its update every round. FedMedian, run on the real Ray backend, keeps
    learning; FedAvg with the same attacker (the in-process round loop, which equals the Flower simulation:
    test_in_process_loop_equals_the_simulation) ends far worse."""
    attack = ["partition.scheme=iid", "adversary.kind=sign_flip", "adversary.partitions=[2]", "adversary.scale=10"]
    result = _simulate(data_root, tmp_path / "median", "federation.strategy=fedmedian", *attack)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ATTACK SIMULATION: partitions [2] are malicious" in result.stdout
    (run,) = (tmp_path / "median").iterdir()
    rounds = _metrics(run)[1:]
    assert all(r["malicious"] == [2] and r["updates"]["2"]["cos_honest"] < 0 for r in rounds)
    median = json.loads((run / "summary.json").read_text())["test"]

    fedavg = _in_process(data_root, tmp_path / "avg", *attack)["summary"]["test"]
    assert median["acc"] - fedavg["acc"] > 0.15 and fedavg["loss"] > 1.5 * median["loss"]  # measured: 0.77 vs 0.47
