"""What Flower + Ray cost over a bare loop (federation issue), and how the simulation scales.

overhead: the same federated run (clients x local epochs x data, FedAvg, server evaluation each
  round) through the same round loop (server/loop.py), (a) on the in-process grid of _sequential.py
  (the ClientApp called directly, one client after the other; no Flower runtime, no Ray) and (b)
  through `fedrobust simulate`, for each --epochs value. Reports the ratio of the summed round
  times and the extra seconds per client update, and separately the start-up cost (launch ->
  round 1 starts, the clients' warm-up included), the round-0 evaluation and the tear-down (last
  round -> every process stopped).
  --parallel runs Flower as the configs ship it (1 CPU per client, clients side by side) against
  the bare loop on every core. Goal: ratio <= 1.2, start-up <= 10 s.
scale: 1000 virtual clients, 10 % (and 5 %) sampled per round, 2 rounds; peak RSS of the whole
  process tree and the per-round time against the number of sampled clients.

    python benchmarks/federation_overhead.py [overhead] [scale] [--epochs 1 3] [--threads 2] [--parallel]
        [--clients 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report
from _sequential import sequential_run
from _simrun import OVERHEAD, OVERHEAD_CONFIG, simulate

from fedrobust.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "bench-overhead"


def _sequential_rounds(cfg, threads: int) -> list[float]:
    """Training phase (``train_seconds``: sampling, local updates, aggregation) of each round of the
    real loop on the in-process grid, in seconds; ``threads`` torch threads for the clients (the
    ClientApp sets ``simulation.cpus_per_client``) and the server alike."""
    torch.set_num_threads(threads)
    cfg = copy.deepcopy(cfg)
    cfg.simulation.cpus_per_client = threads
    run = sequential_run(cfg)["run"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [m["train_seconds"] for m in metrics if m["round"] >= 1]


def _overhead_once(epochs: int, threads: int, parallel: bool, clients: int) -> dict:
    """Bare in-process loop, `fedrobust simulate`, bare loop again, all with the same work.

    ``parallel``: Flower as the configs ship it (one CPU per client, so Ray trains as many clients
    at once as the machine has cores) against the bare loop with one client at a time using every
    core; otherwise both train one client at a time with ``threads`` torch threads.

    The compared figure is the training phase of each round (sampling, local updates, transfer,
    aggregation): the server evaluation after it is the same code in both. The bare loop runs before
    and after the simulation and their mean is used, so a drift in this machine's speed during the
    pair (seen here: +-20 % within minutes) does not land on one side only.
    """
    config = OVERHEAD_CONFIG
    cores = os.cpu_count() or 1
    per_client, ray_cpus, bare_threads = (1, cores, cores) if parallel else (threads, threads, threads)
    overrides = [*OVERHEAD, f"partition.num_clients={clients}", f"federation.local_epochs={epochs}",
                 f"simulation.cpus_per_client={per_client}", f"simulation.num_cpus={ray_cpus}"]
    cfg = load_config(ROOT / config, [f"run.out_dir='{RUNS / 'sequential'}'", *overrides])
    before = _sequential_rounds(cfg, bare_threads)
    tag = ("parallel" if parallel else f"t{threads}") + f"-c{clients}"
    sim = simulate(config, overrides, RUNS, log_file=RUNS / f"overhead-{epochs}-{tag}.log")
    after = _sequential_rounds(cfg, bare_threads)
    seq_rounds = [(a + b) / 2 for a, b in zip(before, after, strict=True)]
    zero = next(m for m in sim["metrics"] if m["round"] == 0)
    rounds = [m for m in sim["metrics"] if m["round"] >= 1]
    sim_rounds = [m["train_seconds"] for m in rounds]
    clients = [m["clients"]["seconds"] for m in rounds]  # mean local-update time per client, measured inside it
    n = cfg.partition.num_clients
    return {
        "epochs": epochs, "before": before, "after": after, "seq": seq_rounds, "sim": sim_rounds,
        "ratio": sum(sim_rounds) / sum(seq_rounds),
        "per_client": (sum(sim_rounds) - sum(seq_rounds)) / (len(rounds) * n),
        "local": sum(clients) / len(clients),
        # launch -> round 1 starts: SuperLink, flwr run, Ray, node registration, the server's data, and
        # then, overlapped, the round-0 evaluation and every client's warm-up (ClientApp, shard, model)
        "startup": rounds[0]["time"] - rounds[0]["seconds"] - sim["started"], "eval0": zero["seconds"],
        "warmup": zero["warmup_seconds"],
        "teardown": sim["started"] + sim["wall"] - rounds[-1]["time"], "wall": sim["wall"], "run": sim["run"],
    }


def overhead(lines: list[str], epochs: list[int], threads: int, parallel: bool, clients: int) -> bool:
    results = [_overhead_once(e, threads, parallel, clients) for e in epochs]
    cores = os.cpu_count() or 1
    if parallel:
        title = f"Flower + Ray as configured: {cores} clients at once, 1 torch thread each"
        how = [f"Flower + Ray with the configs' `simulation.cpus_per_client = 1` on {cores} cores, so Ray trains",
               f"{cores} clients at once with one torch thread each; the bare loop trains one client at a time with",
               f"{cores} torch threads (its fastest way on this machine)."]
    else:
        title = f"one client at a time, {threads} torch thread{'s' if threads > 1 else ''} per client"
        how = [f"{threads} torch thread(s) per client in both cases (`simulation.cpus_per_client = simulation.num_cpus "
               f"= {threads}`, so Ray runs one client at a time, as the bare loop does)."]
    lines += [
        f"## Overhead of the Flower + Ray runtime ({title})",
        "",
        f"pneumoniamnist (4708 training images), resnet18, {clients} IID clients, 3 rounds, FedAvg.",
        *how,
        "Each row is one bare loop, one `fedrobust simulate` and the bare loop again, with the same local work.",
        "The bare loop is the same round loop (`server/loop.py`, warm-up, strategy, evaluation) on an in-process",
        "grid that calls the ClientApp directly, one client after the other: only the runtime differs.",
        "Compared: the training phase of each round (sampling, local updates, transfer, aggregation;",
        "`train_seconds` of `metrics.jsonl`), not the server's test evaluation after it, which is the same code",
        "in both; the bare loop's figure is the mean of its two passes.",
        "",
        "| local epochs | local update s per client (in Flower) | bare loop, before / after, s | bare loop mean, "
        "rounds s | Flower + Ray, rounds s | ratio | extra s per client update |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| {r['epochs']} | {r['local']:.2f} | {sum(r['before']):.1f} / {sum(r['after']):.1f} | "
                     + " + ".join(f"{s:.1f}" for s in r["seq"])
                     + f" = {sum(r['seq']):.1f} | " + " + ".join(f"{s:.1f}" for s in r["sim"])
                     + f" = {sum(r['sim']):.1f} | **{r['ratio']:.2f}×** | {r['per_client']:.2f} |")
    lines += [
        "",
        "Start-up of each simulation: launch until round 1 starts (config checks, SuperLink, `flwr run`, Ray,",
        "node registration, the server's data; then the clients' warm-up, from the ServerApp's request until",
        "every client has loaded its ClientApp, shard and model, during which the server evaluates the initial",
        "model); tear-down: last round's end until every process is stopped.",
        "",
        "| local epochs | start-up s | of which warm-up s | round-0 evaluation s (within the warm-up) | "
        "tear-down s | wall s | run |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| {r['epochs']} | {r['startup']:.1f} | {r['warmup']:.1f} | {r['eval0']:.1f} | "
                     f"{r['teardown']:.1f} | {r['wall']:.1f} | `{r['run'].relative_to(ROOT)}` |")
    lines += ["", "Goals: ratio ≤ 1.2, start-up ≤ 10 s.", ""]
    return all(r["ratio"] <= 1.2 and r["startup"] <= 10 for r in results)


def scale(lines: list[str]) -> bool:
    base = ["model.name=student", "partition.num_clients=1000", "partition.scheme=iid", "partition.min_samples=1",
            "federation.rounds=2", "federation.local_epochs=1", "augment.mode=none", "eval.fgsm_eps=[0.003]",
            "simulation.cpus_per_client=1", "simulation.startup_timeout=600"]
    rows, ok = [], True
    per_client = {}
    for fraction in (0.05, 0.1):
        res = simulate(OVERHEAD_CONFIG, [*base, f"federation.fraction_train={fraction}"],
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
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 3], help="local epochs of the overhead runs")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads per client = Ray CPUs (one client at a time) in the overhead runs")
    p.add_argument("--parallel", action="store_true",
                   help="Flower with 1 CPU per client (clients train side by side, as the configs ship) against "
                        "the bare loop using every core")
    p.add_argument("--clients", type=int, default=5,
                   help="clients of the overhead runs (the same data split among them); with --parallel a count "
                        "that is not a multiple of the cores leaves Ray slots idle at the end of each round")
    p.add_argument("--out", default=str(ROOT / "runs/results/federation_overhead.md"))
    args = p.parse_args()
    if set(args.parts) - {"overhead", "scale"}:
        p.error("parts must be 'overhead' and/or 'scale'")
    RUNS.mkdir(parents=True, exist_ok=True)
    lines = ["# Flower + Ray runtime: overhead and scale (federation issue)", "",
             f"Command: `{command()}`  ", f"Machine: {describe()}", ""]
    ok = True
    started = time.time()
    for part in args.parts:
        if part == "overhead":
            ok &= overhead(lines, args.epochs, args.threads, args.parallel, args.clients)
        else:
            ok &= scale(lines)
    lines.append(f"Benchmark wall time: {time.time() - started:.0f} s.")
    text = write_report(args.out, lines)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
