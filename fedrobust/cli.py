"""The ``fedrobust`` command line: the commands of the core library (train, distill, export, sweep,
report, partition). ``launcher.cli`` adds the ones that start Flower processes (simulate, deploy)
and is the installed entry point; this module never imports it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from fedrobust.config import SWEEP_ATTACKS, SWEEP_TARGETS
from fedrobust.errors import ConfigError, FedrobustError, Terminated
from fedrobust.tasks.specs import SPECS

EPILOG = """examples:
  fedrobust simulate --config configs/quickstart.toml --set federation.rounds=3
  fedrobust simulate --resume runs/quickstart-20260101-120000
  fedrobust train --config configs/centralized_breast_resnet18.toml --set train.epochs=5
  fedrobust distill runs/quickstart-20260101-120000 --set distill.epochs=30
  fedrobust export runs/quickstart-20260101-120000
  fedrobust sweep runs/quickstart-20260101-120000 --attacks fgsm pgd square --eps 0.001 0.003 0.005
  fedrobust report runs/fed-a runs/fed-b --attack pgd --target global --out docs/compare.md
  fedrobust partition --dataset breastmnist --clients 10 --scheme dirichlet --alpha 0.5
  fedrobust partition --task segmentation --clients 5 --scheme dirichlet     (polyp-size skew)
  fedrobust simulate --config configs/quickstart_seg.toml                     (Kvasir-SEG polyps, UNet)
  fedrobust deploy --help          (real clients: certificates, SuperLink, SuperNodes, runs)

data root: --data-root DIR, else $FEDROBUST_DATA_ROOT, else ~/.medmnist (medmnist's default);
segmentation: --data-root DIR, else $FEDROBUST_SEG_ROOT, else ~/.fedrobust/segmentation."""


DATA_ROOT_HELP = ("folder holding the MedMNIST .npz files (else $FEDROBUST_DATA_ROOT), or for segmentation the "
                  "folder holding kvasir-seg/ (else $FEDROBUST_SEG_ROOT)")


def _add_overrides(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=f"override one config value, e.g. --set {example} (repeatable)")
    p.add_argument("--data-root", metavar="DIR", help=DATA_ROOT_HELP)


def add_config_args(p: argparse.ArgumentParser, resume: bool = False) -> None:
    """--config, --set and --data-root (and --resume for the federated commands)."""
    p.add_argument("--config", "-c", metavar="FILE", help="experiment TOML (see configs/); defaults if omitted")
    _add_overrides(p, "train.epochs=3")
    if resume:
        p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")


def overrides_of(args: argparse.Namespace) -> list[str]:
    """``--set`` values, then ``--data-root`` as ``data.root`` (the flag wins over the config file)."""
    overrides = list(args.overrides)
    if getattr(args, "data_root", None):
        overrides.append(f"data.root={str(args.data_root)!r}")
    return overrides


def config_of(args: argparse.Namespace):
    """The config of a command: from --config, or from RUN_DIR/config.toml with --resume."""
    from fedrobust.config import load_config

    resume = getattr(args, "resume", None)
    if not resume:
        return load_config(args.config, overrides_of(args))
    if args.config:
        raise ConfigError("--resume takes its config from RUN_DIR/config.toml; drop --config")
    run_dir = Path(resume)
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(f"--resume {run_dir}: not a run directory (no config.toml); pass a folder that "
                          f"`fedrobust simulate` made, e.g. runs/quickstart-20260101-120000")
    return load_config(run_dir / "config.toml", [*overrides_of(args), f"run.dir={str(run_dir.resolve())!r}"])


def cmd_train(args: argparse.Namespace) -> int:
    from fedrobust.train.centralized import run_centralized

    run_centralized(config_of(args))
    return 0


def _writing(args: argparse.Namespace):
    """The run directory of a distill / export / sweep command, held as its one writer for the command."""
    from fedrobust.checkpoint import run_config
    from fedrobust.rundir import RunDir

    run_config(args.run_dir)  # a folder that is not a run gets its own one-line error first
    return RunDir(args.run_dir).lock(f"fedrobust {args.command}")


def cmd_distill(args: argparse.Namespace) -> int:
    from fedrobust.distill import distill_run

    with _writing(args):
        distill_run(args.run_dir, overrides_of(args))
        if args.export:
            from fedrobust.export import export_run

            export_run(args.run_dir, overrides_of(args))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fedrobust.export import export_run

    with _writing(args):
        export_run(args.run_dir, overrides_of(args))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from fedrobust.checkpoint import run_config
    from fedrobust.pipeline import sweep_and_report

    overrides = overrides_of(args)
    for key in ("eps", "attacks", "targets"):
        value = getattr(args, key)
        if value:
            overrides.append(f"sweep.{key}=" + "[" + ", ".join(repr(v) for v in value) + "]")
    with _writing(args):
        sweep_and_report(run_config(args.run_dir, overrides), args.run_dir)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.seeds:
        from fedrobust.report.seeds import seed_table

        table = seed_table(args.runs)
        print(table)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(table + "\n")
            print(f"written to {args.out}")
        return 0
    from fedrobust.report.compare import compare

    out = compare(args.runs, args.attack, args.target, args.out or Path("comparison.md"))
    print(out.read_text())
    print(f"written to {out} and {out.with_suffix('.png')}")
    return 0


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a finished run (from train or simulate)")
    _add_overrides(p, "distill.epochs=30 (a value of the run's config.toml)")


def cmd_partition(args: argparse.Namespace) -> int:
    from fedrobust.config import DataSection, PartitionSection
    from fedrobust.tasks.registry import task_of

    spec = SPECS[args.task]
    dataset = args.dataset or spec.defaults.get("data.dataset", "breastmnist")
    if args.scheme not in spec.schemes:
        raise ConfigError(f"--scheme {args.scheme}: {args.task} partitions by {', '.join(spec.schemes)}")
    data = DataSection(dataset=dataset, root=args.data_root or "", task=args.task, verify_md5=not args.no_verify,
                       download=not args.no_download, image_size=spec.defaults.get("data.image_size", 28))
    task = task_of(args.task)
    train = task.load(data, "train")
    parts = task.partition(train, PartitionSection(scheme=args.scheme, num_clients=args.clients, alpha=args.alpha,
                                                   labels_per_client=args.labels_per_client,
                                                   min_samples=args.min_samples), args.seed)
    names, table = task.partition_table(train, parts)
    width = max(7, *(len(n) for n in names))
    print(f"{dataset} train split, {len(train)} samples, scheme={args.scheme}"
          + (f" alpha={args.alpha}" if args.scheme in ("dirichlet", "quantity") else "")
          + (f" labels_per_client={args.labels_per_client}" if args.scheme == "shards" else "")
          + f", seed={args.seed}")
    print("client " + " ".join(f"{n:>{width}}" for n in names) + f" {'total':>{width}}")
    for i, row in enumerate(table):
        print(f"{i:>6} " + " ".join(f"{v:>{width}}" for v in row) + f" {row.sum():>{width}}")
    print("total  " + " ".join(f"{v:>{width}}" for v in table.sum(0)) + f" {table.sum():>{width}}")
    return 0


def build_parser(more: Callable[[argparse._SubParsersAction], None] | None = None) -> argparse.ArgumentParser:
    """The parser of the core commands; ``more`` adds further sub-commands (the launcher's)."""
    parser = argparse.ArgumentParser(
        prog="fedrobust",
        description="Federated, adversarially robust medical imaging on MedMNIST: train, partition, evaluate.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if more is not None:
        more(sub)

    p = sub.add_parser("train", help="centralized training + evaluation into one run directory",
                       description="Train on the train split, pick the checkpoint on val, report test "
                                   "accuracy/AUC and FGSM accuracy; writes runs/<name>-<time>/.")
    add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="distill a run's model (teacher) into the compact student",
                       description="Train the [distill] student to match RUN_DIR/model.pt on the server's own "
                                   "data (the val split by default): KL between temperature-softened outputs "
                                   "(T^2-scaled) mixed with cross-entropy on labels; optionally also on FGSM/PGD "
                                   "inputs crafted against the student. Writes RUN_DIR/distill/ (student.pt, "
                                   "metrics.jsonl, config.toml, summary.json with student vs teacher test "
                                   "accuracy).")
    _add_run_args(p)
    p.add_argument("--export", action="store_true", help="then export to ONNX, as `fedrobust export` does")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("export", help="export the student (fp32 + int8) and the teacher to ONNX",
                       description="Write RUN_DIR/export/: student.onnx, student.int8.onnx (static int8, "
                                   "calibrated on val) and teacher.onnx, one file each with dynamic batch and "
                                   "fedrobust metadata. Each fp32 file must match torch on the whole test split "
                                   "(max |logit diff| <= export.parity_atol, same classes) or nothing is "
                                   "written. Run these files with `fedrobust-edge predict`.")
    _add_run_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sweep", help="attack every model of a run over an eps grid; report + plots",
                       description="FGSM, PGD (cross-entropy and margin loss), APGD, the per-image worst case "
                                   "(autoattack, the headline), transfer from the global model, Square "
                                   "(black-box, queries only the target's runtime), random noise and "
                                   "inverse FGSM, over [sweep] eps, against the torch global model, torch "
                                   "student, ONNX fp32 and int8 students (those the run has). Writes "
                                   "RUN_DIR/sweep.csv (long format), report.md with sanity checks, plots/. "
                                   "An interrupted sweep resumes where it stopped.")
    _add_run_args(p)
    p.add_argument("--eps", type=float, nargs="+", help="eps grid (pixel units on [0, 1])")
    p.add_argument("--attacks", nargs="+", choices=SWEEP_ATTACKS, metavar="ATTACK",
                   help=f"subset of {' '.join(SWEEP_ATTACKS)}")
    p.add_argument("--targets", nargs="+", choices=SWEEP_TARGETS, metavar="TARGET",
                   help=f"subset of {' '.join(SWEEP_TARGETS)}")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="compare several runs: their sweeps (table + plot), or by seed",
                       description="One table (rows: runs, columns: clean and each eps) and one plot of "
                                   "accuracy vs eps for one target under one attack; with --seeds, one row per "
                                   "setting (runs whose configs differ only in run.seed grouped) with test and "
                                   "FGSM accuracy by seed, mean, sd and standard error.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--attack", default="pgd", choices=SWEEP_ATTACKS, help="attack to compare (default: pgd)")
    p.add_argument("--target", default="global", choices=SWEEP_TARGETS, help="model to compare (default: global)")
    p.add_argument("--out", type=Path, help="markdown file (default: comparison.md; with --seeds: print only); "
                                            "the plot goes next to it")
    p.add_argument("--seeds", action="store_true", help="the per-seed table of finished runs instead of a sweep "
                                                        "comparison")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("partition", help="print the per-client label (or polyp-size) table of a partition",
                       description="Show how the training split is divided among federated clients: images per "
                                   "class, or for segmentation per polyp-size quartile.")
    p.add_argument("--task", choices=tuple(SPECS), default="classification", help="default: classification")
    p.add_argument("--dataset", help="MedMNIST flag (default: breastmnist), or the segmentation data set's folder "
                                     "under the root (default: kvasir-seg)")
    p.add_argument("--clients", type=int, default=10, help="number of clients (default: 10)")
    p.add_argument("--scheme", choices=sorted({s for spec in SPECS.values() for s in spec.schemes}), default="iid",
                   help="classification: iid, dirichlet, shards; segmentation: iid, quantity, dirichlet")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (default: 0.5)")
    p.add_argument("--labels-per-client", type=int, default=1, help="labels per client for shards")
    p.add_argument("--min-samples", type=int, default=1, help="minimum samples per client (default: 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", metavar="DIR", help=DATA_ROOT_HELP)
    p.add_argument("--no-verify", action="store_true", help="skip the MD5 check (own files)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing file")
    p.set_defaults(func=cmd_partition)
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command; a user-fixable error is one line on stderr and exit code 2."""
    args = (parser or build_parser()).parse_args(argv)
    try:
        return args.func(args)
    except FedrobustError as exc:
        print(f"fedrobust: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("fedrobust: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("fedrobust: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
