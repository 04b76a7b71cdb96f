"""Is a local update slower inside a Ray actor than in a plain process? (federation issue, overhead)

The overhead benchmark found Flower clients' own measured update time above the bare loop's. This
separates Ray from Flower: the same five client updates (pneumoniamnist, resnet18, 5 IID shards,
1 local epoch, 2 torch threads) run in this process and in one Ray actor holding 2 CPUs, alternately,
``--repeats`` times each, so a drift in the machine's speed lands on both sides.

    python benchmarks/ray_actor_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe
from _simrun import OVERHEAD, OVERHEAD_CONFIG, ROOT

# the overhead benchmark's clients; LocalClient writes no run directory
OVERRIDES = [*OVERHEAD, "simulation.cpus_per_client=2", "federation.local_epochs=1"]


def five_updates() -> list[float]:
    """Seconds of each of five local updates (measured inside ``LocalClient.train``), after one warm-up."""
    import torch

    from fedrobust.config import load_config
    from fedrobust.federated import LocalClient

    cfg = load_config(ROOT / OVERHEAD_CONFIG, OVERRIDES)
    torch.set_num_threads(cfg.simulation.cpus_per_client)
    state = LocalClient(cfg, 0).build_model().state_dict()
    LocalClient(cfg, 0).train(state, 1)  # data, model and allocator warm
    return [LocalClient(cfg, pid).train(state, 1)[1]["seconds"] for pid in range(5)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="alternating passes per side (default 3)")
    args = p.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor = ray.remote(num_cpus=2)(_Worker).remote()
        driver, in_ray = [], []
        for i in range(args.repeats):
            driver += five_updates()
            in_ray += ray.get(actor.run.remote())
            print(f"pass {i + 1}: process {statistics.mean(driver[-5:]):.2f} s, "
                  f"Ray actor {statistics.mean(in_ray[-5:]):.2f} s per update", file=sys.stderr)
    finally:
        ray.shutdown()
    d, r = statistics.mean(driver), statistics.mean(in_ray)
    print(f"Command: `{command()}`  \nMachine: {describe()}\n")
    print("| where | updates | mean s per update | sd |\n| --- | --- | --- | --- |")
    print(f"| this process | {len(driver)} | {d:.2f} | {statistics.stdev(driver):.2f} |")
    print(f"| Ray actor (2 CPUs) | {len(in_ray)} | {r:.2f} | {statistics.stdev(in_ray):.2f} |")
    print(f"\nRay actor / process: {r / d:.2f}")
    return 0


class _Worker:
    def run(self) -> list[float]:
        return five_updates()


if __name__ == "__main__":
    started = time.time()
    code = main()
    print(f"\nBenchmark wall time: {time.time() - started:.0f} s.")
    sys.exit(code)
