"""The installed ``fedrobust`` command: the core commands of ``fedrobust.cli`` plus those that start
Flower processes on this host, ``simulate`` (Flower's simulation runtime on Ray) and ``deploy``."""

from __future__ import annotations

import argparse
import sys

from fedrobust import cli as core
from launcher.deploy_cli import add_deploy_parser


def cmd_simulate(args: argparse.Namespace) -> int:
    from launcher.processes import SimulationSuperLink

    cfg = core.config_of(args)  # every value checked (~0.2 s, no torch) before any process starts
    with SimulationSuperLink(cfg.simulation.ray_address) as link:  # boots while the data are checked
        from launcher.simulation import simulate

        simulate(cfg, resume=bool(args.resume), link=link)
    return 0


def _launcher_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="federated training: Flower simulation runtime with Ray",
                       description="Run the federation (ServerApp + one ClientApp per virtual client) in "
                                   "Flower's simulation runtime on Ray; writes runs/<name>-<time>/ with "
                                   "per-round metrics and checkpoints. Stops every process it started.")
    core.add_config_args(p, resume=True)
    p.set_defaults(func=cmd_simulate)
    add_deploy_parser(sub, core.add_config_args, core.config_of)


def build_parser() -> argparse.ArgumentParser:
    return core.build_parser(_launcher_commands)


def main(argv: list[str] | None = None) -> int:
    return core.main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
