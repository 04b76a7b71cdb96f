"""Where the start-up of `fedrobust simulate` goes (federation issue, start-up goal <= 10 s).

Runs a one-round simulation ``--repeats`` times and records, from the launch of the command, when
each process of the runtime first appears (SuperLink, SuperExec, `flwr run`, the simulation
runtime, Ray's GCS and raylet, Ray workers, the client actor), when the ServerApp is ready (it asks
every node to warm up and evaluates the initial model meanwhile) and when round 1 starts, every client
having loaded its ClientApp, shard and model (from `metrics.jsonl`): the start-up figure of
federation_overhead.py. Also the CPU seconds each kind of process of the launch has used by then,
and the machine's idle core-seconds: whether the start-up waits on work or on something else.

    python benchmarks/startup_timeline.py [--config configs/quickstart.toml] [--repeats 3] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe
from _simrun import ROOT, simulate_command

MILESTONES = {  # process command-line marker -> label, in the order they normally appear
    "flower-superlink": "SuperLink process",
    "flower-superexec": "SuperExec process (SuperLink up)",
    "flwr run": "`flwr run` (config checked, data read)",
    "flwr-simulation": "simulation runtime process",
    "gcs_server": "Ray GCS",
    "raylet": "Ray raylet",
    "ray::IDLE": "first Ray worker",
    "ClientAppActor": "client actor",
}
RAY = "Ray (GCS, raylet, agents, idle workers)"
CPU_GROUPS = {  # command-line marker -> who spends the CPU time (first match wins)
    "ClientAppActor": "client actors",
    "flwr-simulation": "simulation runtime + ServerApp",
    "fedrobust simulate": "`fedrobust simulate` (config and data checks)",
    "flower-superlink": "SuperLink",
    "flower-superexec": "SuperExec",
    "flwr run": "`flwr run`",
    "ray::": RAY,  # Ray's renamed workers and agents
    "/ray/": RAY,  # Ray's binaries and scripts
}
QUICK = ["federation.rounds=1", "federation.local_epochs=1", "distill.enabled=false", "export.enabled=false"]


def one_launch(config: str, overrides: list[str], out_dir: Path) -> dict[str, float]:
    """Seconds from launch to each milestone of one run."""
    cmd = simulate_command(config, [*QUICK, *overrides], out_dir)
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT)
    seen: dict[str, float] = {}
    cpu: dict[int, tuple[str, float]] = {}  # pid -> (group, user + system seconds so far)
    snapshots: list[tuple[float, dict[str, float], float]] = []  # (t, CPU s by group, machine idle s)
    idle0 = psutil.cpu_times().idle
    while proc.poll() is None:
        for p in psutil.process_iter(["cmdline", "cpu_times", "create_time"]):
            line = " ".join(p.info["cmdline"] or [])
            for marker in MILESTONES:
                if marker not in seen and marker in line:
                    seen[marker] = time.time() - started
            times = p.info["cpu_times"]
            # psutil's create_time rests on a whole-second boot time: allow 2 s of slack
            if times is not None and p.pid != os.getpid() and (p.info["create_time"] or 0) >= started - 2:
                group = next((g for m, g in CPU_GROUPS.items() if m in line), "other")
                cpu[p.pid] = (group, times.user + times.system)
        by_group: dict[str, float] = {}
        for group, seconds in cpu.values():
            by_group[group] = by_group.get(group, 0.0) + seconds
        snapshots.append((time.time() - started, by_group, psutil.cpu_times().idle - idle0))
        time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"simulation failed ({proc.returncode}); run it by hand: {' '.join(cmd)}")
    (run,) = [p for p in out_dir.iterdir() if p.is_dir()]
    zero, first = (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()[:2])
    seen["ready"] = zero["time"] - zero["warmup_seconds"] - started
    seen["round 1"] = first["time"] - first["seconds"] - started
    seen["round-0 evaluation s"] = zero["seconds"]
    seen["loading s"] = zero["warmup_loading_seconds"]
    seen["exit"] = time.time() - started
    # CPU spent by the processes of this launch until round 1 starts (the last sample before it)
    _, by_group, idle = max((snap for snap in snapshots if snap[0] <= seen["round 1"]), key=lambda snap: snap[0])
    seen.update({f"cpu {group}": seconds for group, seconds in by_group.items()})
    seen["cpu total"] = sum(by_group.values())
    seen["cpu idle"] = idle
    return seen


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/quickstart.toml")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="fedrobust-startup-") as tmp:
            runs.append(one_launch(args.config, args.overrides, Path(tmp)))
        print(f"run {i + 1}: round 1 starts at {runs[-1]['round 1']:.1f} s", file=sys.stderr)
    labels = {**MILESTONES, "ready": "ServerApp ready: clients asked to warm up, round-0 evaluation starts",
              "round 1": "**clients warm, round-0 evaluation done: round 1 starts (start-up)**",
              "round-0 evaluation s": "(round-0 evaluation, s)",
              "loading s": "(longest client shard + model loading in the warm-up, s)",
              "exit": "command returns (1 round)"}
    durations = [k for k in labels if k.endswith(" s")]
    milestones = sorted((k for k in labels if k not in durations),
                        key=lambda k: statistics.median(r.get(k, float("inf")) for r in runs))
    groups = sorted({k for r in runs for k in r if k.startswith("cpu ") and k not in ("cpu total", "cpu idle")},
                    key=lambda k: -statistics.median(r.get(k, 0.0) for r in runs))
    labels.update({k: f"(CPU s until round 1: {k[4:]})" for k in groups})
    labels["cpu total"] = "(CPU s until round 1: all processes of the launch)"
    labels["cpu idle"] = f"(idle core-seconds of the machine's {psutil.cpu_count()} cores until round 1)"
    keys = [*milestones, *durations, *groups, "cpu total", "cpu idle"]
    print(f"Command: `{command()}`  \nMachine: {describe()}\n")
    print("| seconds after launch (median) | " + " | ".join(f"run {i + 1}" for i in range(len(runs)))
          + " | milestone |")
    print("| --- | " + " | ".join("---" for _ in runs) + " | --- |")
    for k in keys:
        values = [r.get(k) for r in runs]
        known = [v for v in values if v is not None]
        med = f"{statistics.median(known):.2f}" if known else "–"
        print(f"| {med} | " + " | ".join(f"{v:.2f}" if v is not None else "–" for v in values) + f" | {labels[k]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
