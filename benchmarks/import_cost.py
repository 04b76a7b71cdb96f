"""CPU seconds a client process spends importing what the ClientApp needs, library by library (federation
issue, start-up): each repeat is a fresh interpreter that imports, in order, Ray, Flower, torch,
torchvision (through fedrobust's CPU shim), ``torch._dynamo`` (counted separately: torchvision's
``ops.roi_align`` pulls it in), pandas and scikit-learn (the ``medmnist`` package's ``__init__`` imports its
evaluator, which needs both, even for ``medmnist.info``), the rest of medmnist, then the ClientApp. Each
dependency is imported before its importer, so every row counts only what it adds.

    python benchmarks/import_cost.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

STEPS = [
    ("ray", "import ray"),
    ("flwr (ClientApp)", "from flwr.clientapp import ClientApp"),
    ("torch", "import torch"),
    ("torch._dynamo (pulled in by torchvision.ops)", "import torch._dynamo"),
    ("torchvision (rest)", "from fedrobust.tvcompat import import_torchvision; import_torchvision()"),
    ("pandas (medmnist's evaluator)", "import pandas"),
    ("sklearn.metrics (medmnist's evaluator)", "import sklearn.metrics"),
    ("medmnist (rest: datasets, PIL)", "import medmnist"),
    ("clients.app (fedrobust's ClientApp)", "import clients.app"),
]

CHILD = """
import json, sys, time
out = []
for name, code in json.loads(sys.argv[1]):
    c, w = time.process_time(), time.perf_counter()
    exec(code)
    out.append([name, time.process_time() - c, time.perf_counter() - w])
print(json.dumps(out))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    root = Path(__file__).resolve().parents[1]
    runs = []
    for _ in range(args.repeats):
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(STEPS)], cwd=root, check=True,
                              capture_output=True, text=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"| import | CPU s (median of {args.repeats}) | wall s (median) |")
    print("| --- | --- | --- |")
    for i, (name, _) in enumerate(STEPS):
        cpu = statistics.median(r[i][1] for r in runs)
        wall = statistics.median(r[i][2] for r in runs)
        print(f"| {name} | {cpu:.2f} | {wall:.2f} |")
    total = statistics.median(sum(step[1] for step in r) for r in runs)
    print(f"| **all of the above** | **{total:.2f}** | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
