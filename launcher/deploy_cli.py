"""``fedrobust deploy ...``: the argument parser; credentials come from ``fedrobust.credentials``, the
Flower processes from ``launcher.deployment`` (imported when a command runs, so ``--help`` is fast)."""

from __future__ import annotations

import argparse
from pathlib import Path

from launcher.processes import DEPLOY_CONNECTION as CONNECTION

DEFAULT_CERTS = Path("deploy/certs")
DEFAULT_KEYS = Path("deploy/keys")

WALKTHROUGH = """walk-through (one server, two hospitals; see README "Real clients"):
  server$ fedrobust deploy certs --host server.hospital.org --host 10.0.0.5
  server$ fedrobust deploy superlink                       # TLS + node authentication, port 9092
  node-k$ fedrobust deploy keys --name hospital-k          # then copy hospital-k.pub to the server
  server$ fedrobust deploy register deploy/keys/hospital-0.pub deploy/keys/hospital-1.pub
  node-k$ fedrobust deploy supernode --superlink server.hospital.org:9092 --root-certificates ca.crt \\
            --key deploy/keys/hospital-k.key --partition-id K --num-partitions 2 --data-root DIR
  server$ fedrobust deploy run --config configs/quickstart.toml --set partition.num_clients=2"""


def cmd_certs(args: argparse.Namespace) -> int:
    from fedrobust.credentials.tls import write_certificates

    files = write_certificates(args.out, args.host, days=args.days, force=args.force)
    print(f"CA certificate {files.ca_cert} (give it to every node and to `flwr run`)")
    print(f"server certificate {files.server_cert} for {', '.join(args.host)}; keys {files.ca_key}, "
          f"{files.server_key} (keep private)")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from fedrobust.credentials.node_keys import write_node_keys

    files = write_node_keys(args.out, args.name, force=args.force)
    print(f"private key {files.private} (stays on this node)")
    print(f"public key {files.public} (register it on the server: fedrobust deploy register {files.public.name})")
    return 0


def cmd_superlink(args: argparse.Namespace) -> int:
    from launcher.deployment import run_superlink

    return run_superlink(None if args.insecure else args.certs, args.host, args.port,
                         auth=not (args.no_auth or args.insecure), database=args.database)


def cmd_register(args: argparse.Namespace) -> int:
    from launcher.deployment import register_nodes

    for key, node_id in zip(args.public_keys, register_nodes(args.public_keys, args.connection), strict=True):
        print(f"registered {key} as SuperNode {node_id}")
    return 0


def cmd_supernode(args: argparse.Namespace) -> int:
    from fedrobust.errors import FedrobustError
    from launcher.deployment import run_supernode

    if args.key is None and not args.no_auth:
        raise FedrobustError("pass --key NODE.key (from `fedrobust deploy keys`), or --no-auth if the SuperLink "
                             "admits any node")
    return run_supernode(args.superlink, None if args.insecure else args.root_certificates,
                         None if args.no_auth else args.key, args.partition_id, args.num_partitions,
                         data_root=args.data_root, data_file=args.data_file, port=args.port,
                         max_wait=args.max_wait, max_retries=args.max_retries)


def cmd_run(args: argparse.Namespace, load) -> int:
    from launcher.deployment import connection_for, deploy_run
    from launcher.processes import FLWR_HOME, write_connection

    if args.superlink:
        ca = None if args.insecure else args.root_certificates
        write_connection(FLWR_HOME, args.connection, connection_for(args.superlink, ca))
    cfg = load(args)
    deploy_run(cfg, resume=bool(args.resume), connection=args.connection)
    return 0


def add_deploy_parser(sub: argparse._SubParsersAction, add_config_args, load) -> None:
    """``fedrobust deploy`` and its sub-commands; ``load`` turns parsed args into a config."""
    deploy = sub.add_parser(
        "deploy", help="real clients on separate machines: certificates, SuperLink, SuperNodes, runs",
        description="Run the same ServerApp and ClientApp with Flower's deployment engine: one SuperLink (the "
                    "server) and one SuperNode per hospital, TLS on and only registered nodes admitted.",
        epilog=WALKTHROUGH, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = deploy.add_subparsers(dest="step", required=True, metavar="STEP")

    p = steps.add_parser("certs", help="create a CA and the SuperLink's TLS certificate",
                         description="Write ca.crt/ca.key and server.crt/server.key (EC P-384) into --out. The "
                                     "server certificate is valid for every --host: the names and IPs nodes use "
                                     "to reach the SuperLink.")
    p.add_argument("--host", action="append", required=True, metavar="NAME_OR_IP",
                   help="host name or IP of the SuperLink (repeatable), e.g. --host 127.0.0.1")
    p.add_argument("--out", type=Path, default=DEFAULT_CERTS, help=f"folder (default: {DEFAULT_CERTS})")
    p.add_argument("--days", type=int, default=365, help="validity in days (default: 365)")
    p.add_argument("--force", action="store_true", help="replace existing certificates")
    p.set_defaults(func=cmd_certs)

    p = steps.add_parser("keys", help="create a SuperNode's authentication key pair",
                         description="Write NAME.key (private, stays on the node) and NAME.pub (OpenSSH, "
                                     "registered on the server) into --out.")
    p.add_argument("--name", required=True, help="node name, e.g. hospital-3")
    p.add_argument("--out", type=Path, default=DEFAULT_KEYS, help=f"folder (default: {DEFAULT_KEYS})")
    p.add_argument("--force", action="store_true", help="replace an existing key pair")
    p.set_defaults(func=cmd_keys)

    p = steps.add_parser("superlink", help="start the SuperLink (foreground; Ctrl-C stops it)",
                         description="Start flower-superlink with TLS from --certs and SuperNode authentication, "
                                     "runtime dependency installation off, and write the 'fedrobust-deploy' "
                                     "connection to the project's .flwr/config.toml.")
    p.add_argument("--certs", type=Path, default=DEFAULT_CERTS, help=f"folder of `deploy certs` (default: "
                                                                     f"{DEFAULT_CERTS})")
    p.add_argument("--host", default="0.0.0.0", help="interface to listen on (default: 0.0.0.0)")
    p.add_argument("--port", type=int, default=9092, help="port for nodes and flwr run (default: 9092)")
    p.add_argument("--database", metavar="FILE", help="keep state (registered nodes, runs) in this SQLite file "
                                                      "across restarts; default: in memory")
    p.add_argument("--no-auth", action="store_true", help="admit any node that trusts the CA (no registration)")
    p.add_argument("--insecure", action="store_true", help="no TLS (implies --no-auth); loopback experiments only")
    p.set_defaults(func=cmd_superlink)

    p = steps.add_parser("register", help="admit SuperNodes by their public keys",
                         description="Register each NAME.pub with the running SuperLink (flwr supernode register).")
    p.add_argument("public_keys", nargs="+", type=Path, metavar="NODE.pub")
    p.add_argument("--connection", default=CONNECTION, help="connection name in .flwr/config.toml")
    p.set_defaults(func=cmd_register)

    p = steps.add_parser("supernode", help="start one SuperNode (foreground; Ctrl-C stops it)",
                         description="Start flower-supernode for one hospital. It trains either its shard of a "
                                     "shared MedMNIST file (--data-root, partition chosen by --partition-id) or its "
                                     "own dataset file (--data-file: a MedMNIST-format .npz, used whole).")
    p.add_argument("--superlink", required=True, metavar="HOST:PORT", help="address of the SuperLink")
    p.add_argument("--root-certificates", type=Path, default=DEFAULT_CERTS / "ca.crt", metavar="CA.crt",
                   help=f"the federation's CA certificate (default: {DEFAULT_CERTS / 'ca.crt'})")
    p.add_argument("--key", type=Path, metavar="NODE.key", help="this node's private key (`deploy keys`)")
    p.add_argument("--partition-id", type=int, required=True)
    p.add_argument("--num-partitions", type=int, required=True)
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data-root", type=Path, metavar="DIR", help="folder holding the MedMNIST .npz files")
    data.add_argument("--data-file", type=Path, metavar="FILE.npz", help="this node's own dataset (MedMNIST keys)")
    p.add_argument("--port", type=int, default=9094, help="local port of the node's runtime API (one per node)")
    p.add_argument("--max-wait", type=float, metavar="SECONDS",
                   help="give up reconnecting after this long (default: keep trying)")
    p.add_argument("--max-retries", type=int, metavar="N", help="give up after N failed connection attempts")
    p.add_argument("--no-auth", action="store_true", help="connect without a key (SuperLink started --no-auth)")
    p.add_argument("--insecure", action="store_true", help="no TLS (SuperLink started --insecure)")
    p.set_defaults(func=cmd_supernode)

    p = steps.add_parser("run", help="run a federation on the SuperLink; results in one run directory",
                         description="Submit this project to the SuperLink (flwr run) with the config as run config "
                                     "and stream the rounds. Run it where the SuperLink runs: the ServerApp writes "
                                     "the run directory (metrics, checkpoints, distill/, export/, sweep) there.")
    add_config_args(p, resume=True)
    p.add_argument("--connection", default=CONNECTION, help="connection name in .flwr/config.toml")
    p.add_argument("--superlink", metavar="HOST:PORT", help="(re)write the connection to this address first")
    p.add_argument("--root-certificates", type=Path, default=DEFAULT_CERTS / "ca.crt", metavar="CA.crt",
                   help="CA certificate for --superlink")
    p.add_argument("--insecure", action="store_true", help="with --superlink: no TLS")
    p.set_defaults(func=lambda args: cmd_run(args, load))
