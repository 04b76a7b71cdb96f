"""Would an exponential moving average of the global model (server side) beat the raw global model?

Replays the per-round global checkpoints of finished federated runs (made with
``federation.keep_checkpoints >= federation.rounds``) through ``fedrobust.federated.averaging``:
for each decay, the averaged model of every round gets its BatchNorm statistics re-estimated on the
server's val split, the round is selected on val AUC (as ``federation.select = "val_auc"``) and test
is reported at that round. Clients are unaffected (they trained from the raw aggregate), so this
is exactly what the option would have given these runs. Reads the runs; writes nothing into them.

    python benchmarks/server_average.py RUN_DIR [RUN_DIR ...] [--decays 0.5 0.8 0.9] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report
from fedrobust.federated.averaging import GlobalAverage

from fedrobust.checkpoint import run_config
from fedrobust.data.loading import load_from_config
from fedrobust.errors import FedrobustError
from fedrobust.models import model_for
from fedrobust.train.batchnorm import recalibrate_batchnorm
from fedrobust.train.evaluate import adversarial_images, evaluate

LAST = 10  # rounds in the plateau mean


def replay(run: Path, decays: list[float], eps: float) -> list[dict]:
    """One row per decay (0 = the raw global model) for ``run``."""
    cfg = run_config(run)
    rounds = cfg.federation.rounds
    paths = [run / "checkpoints" / f"round_{r:04d}.pt" for r in range(1, rounds + 1)]
    if missing := [p.name for p in paths if not p.exists()]:
        raise FedrobustError(f"{run} kept only some round checkpoints (missing {missing[0]} ...); rerun it with "
                             f"--set federation.keep_checkpoints={rounds}")
    val, test = load_from_config(cfg.data, "val"), load_from_config(cfg.data, "test")
    model = model_for(cfg, test.images.shape[1], test.info.num_classes)
    states = [torch.load(p, map_location="cpu", weights_only=False)["model"] for p in paths]
    rows = []
    for decay in decays:
        average = GlobalAverage(model, decay) if decay > 0 else None
        per_round, best, best_state = [], 0, None
        for i, state in enumerate(states):
            model.load_state_dict(average.update(state) if average else state)
            recalibrate_batchnorm(model, val.images, cfg.eval.batch_size)
            v, t = evaluate(model, val, cfg.eval.batch_size), evaluate(model, test, cfg.eval.batch_size)
            per_round.append((v["auc"], v["acc"], t["acc"], t["auc"]))
            if best_state is None or v["auc"] > per_round[best][0]:  # first round with the best val AUC
                best, best_state = i, {k: x.clone() for k, x in model.state_dict().items()}
        model.load_state_dict(best_state)
        fgsm = evaluate(model, test, cfg.eval.batch_size, x=adversarial_images(model, test, eps, cfg.eval.batch_size))
        rows.append({"run": run.name, "decay": decay, "round": best + 1, "val_auc": per_round[best][0],
                     "test_acc": per_round[best][2], "test_auc": per_round[best][3], "fgsm": fgsm["acc"],
                     "last_mean": float(np.mean([p[2] for p in per_round[-LAST:]])),
                     "last_sd": float(np.std([p[2] for p in per_round[-LAST:]])),
                     "final": per_round[-1][2]})
        print(f"{run.name} decay {decay}: round {best + 1} val AUC {per_round[best][0]:.3f} test ACC "
              f"{per_round[best][2]:.3f} FGSM@{eps} {fgsm['acc']:.3f}; last-{LAST} mean {rows[-1]['last_mean']:.3f}",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="federated run directories with every round's checkpoint")
    parser.add_argument("--decays", nargs="+", type=float, default=[0.5, 0.8, 0.9],
                        help="EMA decays to replay (0 = no averaging is always included)")
    parser.add_argument("--eps", type=float, default=0.005, help="FGSM eps reported at the selected round")
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    if bad := [d for d in args.decays if not 0 < d < 1]:
        parser.error(f"--decays must lie in (0, 1), got {bad[0]}")
    decays = [0.0, *args.decays]
    rows = [row for run in args.runs for row in replay(run, decays, args.eps)]
    lines = ["| run | EMA decay | selected round (val AUC) | val AUC | test ACC | test AUC | "
             f"FGSM@{args.eps} | test ACC mean ± sd last {LAST} | test ACC last round |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['decay'] or 'none'} | {r['round']} | {r['val_auc']:.3f} | "
                     f"{r['test_acc']:.3f} | {r['test_auc']:.3f} | {r['fgsm']:.3f} | "
                     f"{r['last_mean']:.3f} ± {r['last_sd']:.3f} | {r['final']:.3f} |")
    lines.append("")
    lines.append("| EMA decay | mean test ACC at val-selected round | mean FGSM | mean last-10 test ACC |")
    lines.append("| --- | --- | --- | --- |")
    for d in decays:
        sel = [r for r in rows if r["decay"] == d]
        lines.append(f"| {d or 'none'} | {np.mean([r['test_acc'] for r in sel]):.3f} | "
                     f"{np.mean([r['fgsm'] for r in sel]):.3f} | {np.mean([r['last_mean'] for r in sel]):.3f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_report(args.out, [f"Command: `{command()}`  ", f"Machine: {describe()}", "", text])


if __name__ == "__main__":
    main()
