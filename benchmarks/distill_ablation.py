"""Distillation settings compared on one teacher: student test accuracy per setting, in one run.

Each positional SETTING is a space-separated list of config overrides (``distill.alpha=0.5
run.seed=1``); the run directory's config.toml is the base. Prints one line per setting. Nothing is
written to the run directory.

    python benchmarks/distill_ablation.py RUN_DIR "distill.alpha=0.3" "distill.alpha=0.5 run.seed=1" ...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fedrobust.checkpoint import load_model, run_config
from fedrobust.distill import distill


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, metavar="RUN_DIR")
    parser.add_argument("settings", nargs="+", metavar="SETTING")
    args = parser.parse_args()
    for setting in args.settings:
        overrides = setting.split()
        cfg = run_config(args.run, overrides)
        started = time.perf_counter()
        _, s = distill(cfg, load_model(cfg, args.run / "model.pt"), log=lambda _: None)
        print(f"{overrides} student {s['student']['test']['acc']:.3f}/{s['student']['test']['auc']:.3f} "
              f"teacher {s['teacher']['test']['acc']:.3f} drop {s['acc_drop_points']:+.1f} "
              f"agree {s['test_agreement']:.3f} {time.perf_counter() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
