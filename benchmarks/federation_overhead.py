"""What Flower + Ray cost over a bare loop (federation issue), and how the simulation scales.

overhead: the same federated work (clients x local epochs x data, FedAvg, server evaluation each
  round) run (a) as a sequential in-process loop and (b) through `fedrobust simulate`. Reports the
  ratio of the summed round times, and separately the start-up cost (launch -> first round) and
  the tear-down cost (last round -> every process stopped). Goal: ratio <= 1.2, start-up <= 10 s.
scale: 1000 virtual clients, 10 % (and 5 %) sampled per round, 2 rounds; peak RSS of the whole
  process tree and the per-round time against the number of sampled clients.

    python benchmarks/federation_overhead.py [overhead] [scale]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report
from _sequential import sequential_fedavg
from _simrun import simulate

from fedrobust.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "bench-overhead"
OVERHEAD = ["model.name=resnet18", "partition.num_clients=5", "partition.scheme=iid", "federation.rounds=3",
            "federation.local_epochs=1", "augment.mode=none", "eval.fgsm_eps=[0.003]", "simulation.cpus_per_client=2",
            "sweep.enabled=false"]


def overhead(lines: list[str]) -> bool:
    config = "configs/fed_pneumonia_resnet18.toml"
    cfg = load_config(ROOT / config, [f"run.out_dir='{RUNS / 'sequential'}'", *OVERHEAD])
    torch.set_num_threads(cfg.simulation.cpus_per_client)
    seq = sequential_fedavg(cfg, log=lambda s: print("sequential", s, file=sys.stderr))
    seq_rounds = [r["seconds"] for r in seq["history"]]
    sim = simulate(config, OVERHEAD, RUNS, log_file=RUNS / "overhead.log")
    rounds = [m for m in sim["metrics"] if m["round"] >= 1]
    sim_rounds = [m["seconds"] for m in rounds]
    first_start = rounds[0]["time"] - rounds[0]["seconds"]
    startup = first_start - sim["started"]
    teardown = sim["started"] + sim["wall"] - rounds[-1]["time"]
    ratio = sum(sim_rounds) / sum(seq_rounds)
    ok = ratio <= 1.2 and startup <= 10
    lines += [
        "## Overhead of the Flower + Ray runtime",
        "",
        "pneumoniamnist (4708 training images), resnet18, 5 IID clients x 1 local epoch, 3 rounds, FedAvg,",
        "server-side test evaluation (clean + FGSM) every round; 2 torch threads per client in both cases",
        "(`simulation.cpus_per_client = 2`, so Ray runs one client at a time on this 2-core machine).",
        "",
        "| | round 1 s | round 2 s | round 3 s | sum s |",
        "| --- | --- | --- | --- | --- |",
        "| sequential loop | " + " | ".join(f"{s:.1f}" for s in seq_rounds) + f" | {sum(seq_rounds):.1f} |",
        "| Flower + Ray | " + " | ".join(f"{s:.1f}" for s in sim_rounds) + f" | {sum(sim_rounds):.1f} |",
        "",
        f"Ratio Flower+Ray / sequential over the rounds: **{ratio:.2f}×** (goal ≤ 1.2). Start-up (launch to the",
        f"first round: SuperLink, Ray, node registration, round-0 evaluation): **{startup:.1f} s** (goal ≤ 10 s).",
        f"Tear-down (last round to every process stopped, incl. final evaluation): {teardown:.1f} s.",
        f"Wall time of `fedrobust simulate`: {sim['wall']:.1f} s. Run: `{sim['run'].relative_to(ROOT)}`.",
        "",
    ]
    return ok


def scale(lines: list[str]) -> bool:
    base = ["model.name=student", "partition.num_clients=1000", "partition.scheme=iid", "partition.min_samples=1",
            "federation.rounds=2", "federation.local_epochs=1", "augment.mode=none", "eval.fgsm_eps=[0.003]",
            "simulation.cpus_per_client=1", "simulation.startup_timeout=600"]
    rows, ok = [], True
    per_client = {}
    for fraction in (0.05, 0.1):
        res = simulate("configs/fed_pneumonia_resnet18.toml", [*base, f"federation.fraction_train={fraction}"],
                       RUNS, log_file=RUNS / f"scale-{fraction}.log", measure_memory=True)
        rounds = [m for m in res["metrics"] if m["round"] >= 1]
        sampled = rounds[0]["sampled"]
        secs = [m["seconds"] for m in rounds]
        # warm round (2), client phase only: the server's test evaluation is a fixed cost per round
        per_client[fraction] = rounds[-1]["train_seconds"] / sampled
        peak_gb = res["peak_rss"] / 2**30
        ok &= peak_gb <= 4.0 and all(m["replies"] == m["sampled"] for m in rounds)
        rows.append(f"| {fraction:.0%} | {sampled} | " + " | ".join(f"{s:.1f}" for s in secs)
                    + f" | {rounds[-1]['train_seconds']:.1f} | {per_client[fraction] * 1000:.0f} | {peak_gb:.2f}"
                    + f" | {res['wall']:.0f} |")
    prop = per_client[0.1] / per_client[0.05]
    ok &= 0.67 <= prop <= 1.5
    lines += [
        "## Scale: 1000 virtual clients on 2 cores",
        "",
        "pneumoniamnist split IID over 1000 clients (4-5 images each), student CNN, 2 rounds, 1 CPU per client.",
        "Peak memory: summed RSS of `fedrobust simulate` and every process it started (SuperLink,",
        "simulation runtime, Ray), sampled every 0.5 s.",
        "",
        "| sampled per round | clients | round 1 s | round 2 s | round 2 client phase s | ms per sampled client "
        "| peak RSS GB | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Client-phase time per sampled client (warm round 2) at 10 % / at 5 %: {prop:.2f} (1.0 = round time",
        "proportional to the number of sampled clients; round time also holds a fixed server evaluation).",
        "",
    ]
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="*", default=["overhead", "scale"], help="overhead and/or scale (default: both)")
    p.add_argument("--out", default=str(ROOT / "docs/results/federation_overhead.md"))
    args = p.parse_args()
    if set(args.parts) - {"overhead", "scale"}:
        p.error("parts must be 'overhead' and/or 'scale'")
    RUNS.mkdir(parents=True, exist_ok=True)
    lines = ["# Flower + Ray runtime: overhead and scale (federation issue)", "",
             f"Command: `{command()}`  ", f"Machine: {describe()}", ""]
    ok = True
    started = time.time()
    for part in args.parts:
        ok &= {"overhead": overhead, "scale": scale}[part](lines)
    lines.append(f"Benchmark wall time: {time.time() - started:.0f} s.")
    text = write_report(args.out, lines)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
