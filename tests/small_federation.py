"""The small federation the Flower tests launch (3 hospitals, 2 rounds, the student), through `fedrobust
simulate` or through the in-process round loop of benchmarks/_sequential.py."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from fedrobust.config import load_config

REPO = Path(__file__).resolve().parents[1]
TINY = ("run.name=sim", "model.name=student", "partition.num_clients=3", "partition.min_samples=10",
        "federation.rounds=2", "federation.local_epochs=1", "augment.warmup_epochs=0", "distill.enabled=false",
        "export.enabled=false", "sweep.enabled=false")


def simulate(data_root, out_dir: Path, *overrides: str, resume: Path | None = None, timeout: float = 400):
    """`fedrobust simulate` of TINY + ``overrides`` (or ``--resume``), run to its end."""
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


def launch(data_root, out_dir: Path, *overrides: str) -> subprocess.Popen:
    """`simulate`'s command, started in the background (stdout line-buffered for the test to read)."""
    cmd = [sys.executable, "-m", "launcher", "simulate", "--config", str(REPO / "configs" / "quickstart.toml")]
    for o in (*TINY, f"run.out_dir='{out_dir}'", *overrides):
        cmd += ["--set", o]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env=dict(os.environ, FEDROBUST_DATA_ROOT=str(data_root), PYTHONUNBUFFERED="1"))


def in_process(data_root, out_dir: Path, *overrides: str) -> dict:
    """`simulate`'s federation through benchmarks/_sequential.py: the real round loop and ClientApp, no runtime."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import _sequential

    cfg = load_config(REPO / "configs" / "quickstart.toml",
                      [*TINY, f"run.out_dir='{out_dir}'", f"data.root='{data_root}'", *overrides])
    return _sequential.sequential_run(cfg, log=io.StringIO())


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
