"""Who uses the CPU while Flower + Ray clients train (federation issue, overhead lead).

Runs the overhead benchmark's simulation once (pneumoniamnist, resnet18, 5 IID clients, one client
at a time with 2 torch threads) and samples every process's CPU time every 0.25 s; for each round's
training phase (from `metrics.jsonl`) prints the share of one core each process (and the client
actor's and simulation runtime's busiest threads) used, and how the machine's time split between
user, nice, system and idle (/proc/stat).

    python benchmarks/runtime_cpu.py [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe
from _simrun import OVERHEAD, OVERHEAD_CONFIG, ROOT, simulate_command

OVERRIDES = [*OVERHEAD, "federation.local_epochs=1", "simulation.cpus_per_client=2", "simulation.num_cpus=2"]
WATCH_THREADS = ("ClientAppActor", "flwr-simulation", "superlink")
STAT_FIELDS = ("user", "nice", "system", "idle")


def _short(argv: list[str]) -> str:
    """`flwr-simulation`, `raylet`, `ray::ClientAppActor`: the program, not the interpreter."""
    if len(argv) == 1:
        return argv[0].split()[0]
    args = argv[1:] if Path(argv[0]).name.startswith("python") else argv
    program = next((a for a in args if not a.startswith("-")), argv[0])
    return Path(program).name


def _snapshot() -> dict:
    procs: dict = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            argv = p.info["cmdline"] or [p.info["name"]]
            name = " ".join(argv)
            short = _short(argv)
            t = p.cpu_times()
            procs[p.pid] = (short[:60], t.user + t.system)
            if any(k in name for k in WATCH_THREADS):
                for th in p.threads():
                    procs[(p.pid, th.id)] = (f"{short[:30]} thread {th.id}", th.user_time + th.system_time)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    with open("/proc/stat") as f:
        stat = [int(x) for x in f.readline().split()[1:5]]
    return {"time": time.time(), "stat": stat, "procs": procs}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    out = ROOT / "runs" / "bench-runtime-cpu"
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    samples: list[dict] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(_snapshot())
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cmd = simulate_command(OVERHEAD_CONFIG, [*OVERRIDES, *args.overrides], out)
    code = subprocess.call(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    stop.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"simulation failed ({code}); run it by hand: {' '.join(cmd)}")
    (run,) = set(out.iterdir()) - before
    rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][1:]
    print(f"Command: `{command()}`  \nMachine: {describe()}  \nRun: `{run.relative_to(ROOT)}`\n")
    for m in rounds:
        # the training phase ends where the round's server evaluation begins
        end = m["time"] - (m["seconds"] - m["train_seconds"])
        a = min(samples, key=lambda s: abs(s["time"] - (end - m["train_seconds"])))
        b = min(samples, key=lambda s: abs(s["time"] - end))
        dt = b["time"] - a["time"]
        st = [y - x for x, y in zip(a["stat"], b["stat"], strict=True)]
        split = ", ".join(f"{k} {v / sum(st):.0%}" for k, v in zip(STAT_FIELDS, st, strict=True))
        print(f"### Round {m['round']}: training phase {m['train_seconds']:.1f} s, local update "
              f"{m['clients']['seconds']:.2f} s per client; machine: {split}\n")
        print("| % of one core | process or thread |\n| --- | --- |")
        used = [((cpu - a["procs"][k][1]) / dt * 100, name) for k, (name, cpu) in b["procs"].items()
                if k in a["procs"]]
        for share, name in sorted(used, reverse=True):
            if share >= 0.5:
                print(f"| {share:.1f} | {name} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
