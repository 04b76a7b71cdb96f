"""Run `fedrobust simulate` as a user would (a subprocess) and read back its run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]


class TreeMemory(threading.Thread):
    """Peak summed RSS of a process, its descendants, and anything started in a fedrobust
    simulation workdir (Ray's helpers get re-parented away from the tree)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self._stop_flag = pid, interval, 0, threading.Event()

    def _members(self) -> dict[int, psutil.Process]:
        found: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.pid)
            found[root.pid] = root
            found.update({p.pid: p for p in root.children(recursive=True)})
        except psutil.NoSuchProcess:
            return found
        for p in psutil.process_iter():
            try:
                if p.pid not in found and os.path.basename(p.cwd()).startswith("fedrobust-sim-"):
                    found[p.pid] = p
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def run(self) -> None:
        while not self._stop_flag.is_set():
            total = 0
            for p in self._members().values():
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_flag.set()
        self.join(timeout=10)
        return self.peak


# The overhead benchmark's federation (federation_overhead.py):
# resnet18 on pneumoniamnist, 5 IID clients, 3 rounds, no augmentation, one FGSM eps in the evaluation.
OVERHEAD_CONFIG = "configs/fed_pneumonia_resnet18.toml"
OVERHEAD = ["model.name=resnet18", "partition.num_clients=5", "partition.scheme=iid", "federation.rounds=3",
            "augment.mode=none", "eval.fgsm_eps=[0.003]", "sweep.enabled=false",
            "federation.bn_recalibration=none"]  # as measured before the config recalibrated (session 10)


def simulate_command(config: str, overrides: list[str], out_dir: Path) -> list[str]:
    """`fedrobust simulate` as a user types it, writing into ``out_dir``, training figures only."""
    cmd = [sys.executable, "-m", "launcher", "simulate", "--config", str(ROOT / config),
           "--set", f"run.out_dir='{out_dir}'", "--set", "sweep.enabled=false"]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def simulate(config: str, overrides: list[str], out_dir: Path, log_file: Path | None = None,
             measure_memory: bool = False) -> dict[str, Any]:
    """Run one simulation; return its run dir, metrics, summary, wall time and peak memory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    before = {p for p in out_dir.iterdir() if p.is_dir()}
    cmd = simulate_command(config, overrides, out_dir)
    started = time.time()
    out = log_file.open("w") if log_file else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    mem = TreeMemory(proc.pid) if measure_memory else None
    if mem:
        mem.start()
    code = proc.wait()
    wall = time.time() - started
    peak = mem.stop() if mem else None
    (run,) = {p for p in out_dir.iterdir() if p.is_dir()} - before
    if code != 0:
        raise RuntimeError(f"simulation failed ({code}); see {log_file or run}")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"run": run, "metrics": metrics, "summary": json.loads((run / "summary.json").read_text()),
            "wall": wall, "started": started, "peak_rss": peak}
