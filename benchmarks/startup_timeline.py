"""Where the start-up of `fedrobust simulate` goes (federation issue, start-up goal <= 10 s).

Runs a one-round simulation ``--repeats`` times and records, from the launch of the command, when
each process of the runtime first appears (SuperLink, SuperExec, `flwr run`, the simulation
runtime, Ray's GCS and raylet, Ray workers, the client actor), when the ServerApp is ready (it asks
every node to warm up and evaluates the initial model meanwhile) and when round 1 starts, every client
having loaded its ClientApp, shard and model (from `metrics.jsonl`): the start-up figure of
federation_overhead.py.

    python benchmarks/startup_timeline.py [--config configs/quickstart.toml] [--repeats 3] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
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
QUICK = ["federation.rounds=1", "federation.local_epochs=1", "distill.enabled=false", "export.enabled=false"]


def one_launch(config: str, overrides: list[str], out_dir: Path) -> dict[str, float]:
    """Seconds from launch to each milestone of one run."""
    cmd = simulate_command(config, [*QUICK, *overrides], out_dir)
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT)
    seen: dict[str, float] = {}
    while proc.poll() is None:
        for p in psutil.process_iter(["cmdline"]):
            line = " ".join(p.info["cmdline"] or [])
            for marker in MILESTONES:
                if marker not in seen and marker in line:
                    seen[marker] = time.time() - started
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
    keys = sorted(labels, key=lambda k: statistics.median(r.get(k, float("inf")) for r in runs)
                  if not k.endswith(" s") else float("inf"))
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
