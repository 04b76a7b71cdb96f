"""Deployment engine: the same ServerApp and ClientApp with real, separately started processes.

One SuperLink (the server machine) and one SuperNode per hospital or edge device, TLS on by
default and SuperNode authentication on (only registered public keys may join). Each command
here runs one Flower process in the foreground, shows its output, and stops its whole process
tree on Ctrl-C or SIGTERM; before starting anything it checks its inputs, so a missing
certificate or key is one line, not a Flower traceback.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedrobust.config import ExperimentConfig
from fedrobust.credentials.node_keys import check_private_key
from fedrobust.credentials.tls import certificate_files, certificate_hosts, check_certificate
from fedrobust.data.catalog import supported_flags
from fedrobust.errors import FedrobustError, Terminated
from launcher.processes import DEPLOY_CONNECTION as CONNECTION
from launcher.processes import (
    FLWR_HOME,
    MARKER,
    Watchdog,
    flower_env,
    raise_interrupt,
    stop_processes,
    write_connection,
)
from launcher.simulation import check_complete, start_run, submit_run

DEFAULT_PORT = 9092
FATAL_GRACE = 3.0  # seconds a process whose main thread crashed may take to exit by itself


def _port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise FedrobustError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None


def flower_failure(lines: list[str]) -> str:
    """Flower's own explanation of why a process exited (the lines after 'Exit Code:')."""
    text = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in lines]
    for i, line in enumerate(text):
        if "Exit Code:" in line:
            why = []
            for follow in text[i + 1:]:
                if not follow or follow.startswith("For more information"):
                    break
                why.append(follow)
            return " ".join(why) or line
    errors = [line for line in text if line.startswith("ERROR") or "Error" in line]
    return errors[-1] if errors else (text[-1] if text else "no output")


def _say(text: str) -> None:
    print(text, flush=True)  # the output of a long-running server is usually a log file


def serve(argv: list[str], env: dict[str, str], what: str, echo: Callable[[str], Any] = _say,
          cwd: Path | None = None) -> int:
    """Run one Flower process in the foreground until it exits or we are stopped; stop its tree.

    Returns 0 when stopped by Ctrl-C (SIGTERM: exit 143 after the same clean-up); raises with
    Flower's reason when it fails. A process whose main thread died of an uncaught exception is a
    failure too, even while its other threads keep it alive (Flower's SuperNode does that on a bad
    certificate): it gets ``FATAL_GRACE`` seconds to exit on its own.
    """
    marker = uuid.uuid4().hex
    env = {**env, MARKER: marker}
    watchdog = Watchdog(marker)  # the Flower process tree ends with this wrapper, however it ends
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=cwd)
    tail: list[str] = []
    crash: list[tuple[float, str]] = []  # (when, the exception line) of an uncaught traceback

    def pump() -> None:  # a helper Flower starts may keep the pipe open after the main process exits
        assert proc.stdout is not None
        in_traceback = False
        for line in proc.stdout:
            echo(line.rstrip())
            tail.append(line)
            del tail[:-40]
            if line.startswith("Traceback (most recent call last)") and not (
                    len(tail) > 1 and tail[-2].startswith("Exception ignored")):
                in_traceback = True
            elif in_traceback and line.strip() and not line.startswith(" "):
                in_traceback = False
                if not crash:
                    crash.append((time.monotonic(), line.strip()))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        echo(f"{what}: pid {proc.pid}")
        while (code := proc.poll()) is None and not (crash and time.monotonic() - crash[0][0] > FATAL_GRACE):
            time.sleep(0.2)
    except KeyboardInterrupt as stop:
        echo(f"{what}: stopping")
        if isinstance(stop, Terminated):
            raise
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_processes(proc, marker)
        reader.join(timeout=5)
        watchdog.stop()
    if code is None:
        raise FedrobustError(f"{what} failed: {crash[0][1]}")
    if code != 0:
        raise FedrobustError(f"{what} exited with code {code}: {crash[0][1] if crash else flower_failure(tail)}")
    return 0


# SuperLink --------------------------------------------------------------------------------------
def superlink_argv(certs: Path | None, host: str, port: int, auth: bool, database: str | None) -> list[str]:
    """``flower-superlink`` with TLS from ``certs`` (``None`` = insecure) and node authentication."""
    argv = ["flower-superlink", "--host", host, "--port", str(port), "--disable-runtime-dependency-installation"]
    if certs is None:
        if auth:
            raise FedrobustError("SuperNode authentication needs TLS; drop --insecure or pass --no-auth")
        argv.append("--insecure")
    else:
        files = certificate_files(certs)
        for path in (files.ca_cert, files.server_cert, files.server_key):
            if not path.is_file():
                raise FedrobustError(f"{path} is missing; create the certificates with "
                                     f"`fedrobust deploy certs --out {certs} --host <this machine's name or IP>`")
        argv += ["--ssl-ca-certfile", str(files.ca_cert), "--ssl-certfile", str(files.server_cert),
                 "--ssl-keyfile", str(files.server_key)]
        if auth:
            argv.append("--enable-supernode-auth")
    if database:
        argv += ["--database", database]
    return argv


def connection_for(address: str, root_certificates: Path | None) -> dict[str, Any]:
    """A ``[superlink.<name>]`` entry of Flower's config.toml."""
    if root_certificates is None:
        return {"address": address, "insecure": True}
    check_certificate(root_certificates, "--root-certificates")
    return {"address": address, "root-certificates": str(Path(root_certificates).resolve())}


def run_superlink(certs: Path | None, host: str, port: int, auth: bool = True, database: str | None = None,
                  echo: Callable[[str], Any] = _say) -> int:
    """Start the SuperLink in the foreground and write the ``fedrobust-deploy`` connection."""
    argv = superlink_argv(certs, host, port, auth, database)
    _port_free(host, port)
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    ca = None
    if certs is not None:
        files = certificate_files(certs)
        ca, valid = files.ca_cert, certificate_hosts(files.server_cert)
        if local not in valid:
            echo(f"note: {files.server_cert} is valid for {', '.join(valid)}, not {local}: nodes and `flwr run` "
                 f"must use one of those names")
    write_connection(FLWR_HOME, CONNECTION, connection_for(f"{local}:{port}", ca))
    echo(f"connection '{CONNECTION}' written to {FLWR_HOME / 'config.toml'}"
         + ("; register nodes with `fedrobust deploy register NODE.pub`" if auth else ""))
    return serve(argv, flower_env(FLWR_HOME), "SuperLink", echo)


# registration -----------------------------------------------------------------------------------
def _connection_exists(name: str) -> None:
    path = FLWR_HOME / "config.toml"
    links = tomllib.loads(path.read_text()).get("superlink", {}) if path.is_file() else {}
    if name not in links:
        raise FedrobustError(f"no SuperLink connection '{name}' in {path}; start `fedrobust deploy superlink` on "
                             f"this machine, or pass --superlink HOST:PORT --root-certificates ca.crt")


def register_nodes(public_keys: list[Path], connection: str = CONNECTION) -> list[int]:
    """Register SuperNode public keys with the SuperLink (``flwr supernode register``); node ids."""
    for key in public_keys:  # the files first: they are what the user typed
        if not Path(key).is_file():
            raise FedrobustError(f"{key} does not exist; create node keys with `fedrobust deploy keys --name NAME`")
    _connection_exists(connection)
    ids = []
    for key in public_keys:
        done = subprocess.run(["flwr", "supernode", "register", str(key), connection, "--format", "json"],
                              env=flower_env(FLWR_HOME), capture_output=True, text=True, timeout=120)
        found = re.search(r'"node-id":\s*(\d+)', done.stdout)
        if done.returncode != 0 or not found:
            why = flower_failure((done.stdout + done.stderr).splitlines())
            raise FedrobustError(f"registering {key} failed: {why}")
        ids.append(int(found.group(1)))
    return ids


# SuperNode --------------------------------------------------------------------------------------
def node_config(partition_id: int, num_partitions: int, data_root: Path | None = None,
                data_file: Path | None = None) -> str:
    """The ``--node-config`` string the ClientApp reads (see clients/app.py)."""
    if num_partitions < 1 or not 0 <= partition_id < num_partitions:
        raise FedrobustError(f"--partition-id {partition_id} must be in 0..{num_partitions - 1} "
                             f"(--num-partitions {num_partitions})")
    parts = [f"partition-id={partition_id}", f"num-partitions={num_partitions}"]
    if data_root is not None and data_file is not None:
        raise FedrobustError("pass either --data-root (a shard of a shared dataset) or --data-file (this node's "
                             "own dataset), not both")
    if data_root is not None:
        if not Path(data_root).is_dir():
            raise FedrobustError(f"--data-root {data_root} is not a folder")
        root = Path(data_root)
        masks = any((d / "images").is_dir() and (d / "masks").is_dir() for d in (root, *root.iterdir()))
        if not masks and not any(f.stem.split("_")[0] in supported_flags() for f in root.glob("*.npz")):
            raise FedrobustError(f"--data-root {data_root} holds no MedMNIST .npz file (e.g. breastmnist.npz) and no "
                                 f"images/ + masks/ folder; pass the folder with the federation's dataset, or "
                                 f"--data-file with this node's own")
        parts.append(f"data-root={json.dumps(str(Path(data_root).resolve()))}")
    if data_file is not None:
        if not Path(data_file).is_file():
            raise FedrobustError(f"--data-file {data_file} does not exist")
        parts.append(f"data-file={json.dumps(str(Path(data_file).resolve()))}")
    return " ".join(parts)


def supernode_argv(superlink: str, root_certificates: Path | None, key: Path | None, config: str,
                   port: int, max_wait: float | None = None, max_retries: int | None = None) -> list[str]:
    argv = ["flower-supernode", "--superlink", superlink, "--port", str(port), "--node-config", config]
    if root_certificates is None:
        argv.append("--insecure")
    else:
        check_certificate(root_certificates, "--root-certificates")
        argv += ["--root-certificates", str(root_certificates)]
    if key is not None:
        check_private_key(key)
        argv += ["--auth-supernode-private-key", str(key)]
    if max_wait is not None:
        argv += ["--max-wait-time", str(max_wait)]
    if max_retries is not None:
        argv += ["--max-retries", str(max_retries)]
    return argv


def run_supernode(superlink: str, root_certificates: Path | None, key: Path | None, partition_id: int,
                  num_partitions: int, data_root: Path | None = None, data_file: Path | None = None,
                  port: int = 9094, max_wait: float | None = None, max_retries: int | None = None,
                  echo: Callable[[str], Any] = _say) -> int:
    """Start one SuperNode in the foreground (its own FLWR_HOME under .flwr/nodes/)."""
    if ":" not in superlink:
        raise FedrobustError(f"--superlink {superlink!r}: give HOST:PORT, e.g. server.hospital.org:{DEFAULT_PORT}")
    config = node_config(partition_id, num_partitions, data_root, data_file)
    argv = supernode_argv(superlink, root_certificates, key, config, port, max_wait, max_retries)
    _port_free("127.0.0.1", port)
    home = FLWR_HOME / "nodes" / f"port-{port}"
    return serve(argv, flower_env(home), f"SuperNode {partition_id}/{num_partitions}", echo)


def _stop_remote_run(flower_log: Path, connection: str, env: dict[str, str], echo: Callable[[str], Any]) -> None:
    """Ctrl-C on `deploy run` also stops the ServerApp on the SuperLink (``flwr stop``)."""
    found = re.findall(r"started run (\d+)", flower_log.read_text(errors="replace")) if flower_log.exists() else []
    if found:
        done = subprocess.run(["flwr", "stop", found[-1], connection], env=env, capture_output=True, text=True,
                              timeout=60)
        echo(f"run {found[-1]} stopped on the SuperLink" if done.returncode == 0 else
             f"could not stop run {found[-1]} on the SuperLink: {flower_failure(done.stdout.splitlines())}")


# the run ----------------------------------------------------------------------------------------
def deploy_run(cfg: ExperimentConfig, resume: bool = False, connection: str = CONNECTION,
               echo: Callable[[str], Any] = _say) -> Path:
    """Submit the federation to a running SuperLink; return the complete run directory.

    The ServerApp runs on the SuperLink's machine and writes the run directory there, so run
    this where the SuperLink runs (or where it shares the file system).
    """
    _connection_exists(connection)
    marker = uuid.uuid4().hex
    run = start_run(cfg, resume, "deploy run", marker)
    env = flower_env(FLWR_HOME, {MARKER: marker})
    staging = Path(tempfile.mkdtemp(prefix="fedrobust-deploy-"))
    watchdog = Watchdog(marker, remove=[staging])  # `flwr run` ends with us, however we end
    runner = None
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        echo(f"submitting to '{connection}'; waiting for {cfg.partition.num_clients} SuperNodes")
        runner = submit_run(run, connection, env, run.path, echo, cfg.simulation.verbose, staging)
    except KeyboardInterrupt:
        _stop_remote_run(run.path / "flower.log", connection, env, echo)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if runner is not None:
            stop_processes(runner, marker, grace=5)
        shutil.rmtree(staging, ignore_errors=True)
        watchdog.stop()
        run.release()
    return check_complete(run, "resume with `fedrobust deploy run --resume", cfg)

