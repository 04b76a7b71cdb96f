"""Deployment engine: credentials, and a real SuperLink + SuperNodes with TLS and node
authentication on loopback, each started as its own `fedrobust deploy ...` process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedrobust.config import load_config
from fedrobust.credentials.node_keys import check_private_key, write_node_keys
from fedrobust.credentials.tls import certificate_hosts, write_certificates
from fedrobust.data.partition import partition_indices
from fedrobust.errors import FedrobustError
from launcher.cli import main

REPO = Path(__file__).resolve().parents[1]


# credentials ------------------------------------------------------------------------------------
def test_certificates_form_a_chain_for_the_given_hosts(tmp_path):
    files = write_certificates(tmp_path, ["127.0.0.1", "server.hospital.org"])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert sorted(certificate_hosts(files.server_cert)) == ["127.0.0.1", "server.hospital.org"]
    assert files.ca_key.stat().st_mode & 0o777 == 0o600 and files.server_key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FedrobustError, match="already exists; pass --force"):
        write_certificates(tmp_path, ["127.0.0.1"])
    again = write_certificates(tmp_path, ["10.0.0.5"], force=True)
    assert certificate_hosts(again.server_cert) == ["10.0.0.5"]


def test_certificate_input_errors_are_one_line(tmp_path, capsys):
    assert main(["deploy", "certs", "--host", "no such host", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "neither an IP address nor a host name" in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_node_keys_are_what_flower_accepts(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key

    files = write_node_keys(tmp_path, "hospital-1")
    key = serialization.load_ssh_private_key(files.private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and files.private.stat().st_mode & 0o777 == 0o600
    assert try_load_public_key(files.public)  # Flower's own check of a registered key
    check_private_key(files.private)
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(FedrobustError, match="not an unencrypted OpenSSH private key"):
        check_private_key(tmp_path / "bad.key")
    with pytest.raises(FedrobustError, match="already exists"):
        write_node_keys(tmp_path, "hospital-1")
    with pytest.raises(FedrobustError, match="use letters"):
        write_node_keys(tmp_path, "../evil")


def test_supernode_inputs_are_checked_before_starting(tmp_path, capsys):
    base = ["deploy", "supernode", "--superlink", "127.0.0.1:1", "--root-certificates", str(tmp_path / "ca.crt")]
    assert main([*base, "--partition-id", "0", "--num-partitions", "2", "--no-auth"]) == 2
    assert "ca.crt is missing" in capsys.readouterr().err
    assert main([*base, "--partition-id", "0", "--num-partitions", "2", "--insecure"]) == 2
    assert "pass --key NODE.key" in capsys.readouterr().err
    assert main([*base, "--partition-id", "3", "--num-partitions", "2", "--insecure", "--no-auth"]) == 2
    assert "must be in 0..1" in capsys.readouterr().err
    assert main(["deploy", "superlink", "--certs", str(tmp_path / "none"), "--port", "1"]) == 2
    assert "fedrobust deploy certs" in capsys.readouterr().err


def test_a_node_can_train_on_its_own_file(tmp_path, data_root):
    from fedrobust.federated import LocalClient

    official = np.load(data_root / "breastmnist.npz")
    own = tmp_path / "hospital.npz"
    np.savez(own, train_images=official["train_images"][:40], train_labels=official["train_labels"][:40],
             test_images=official["test_images"][:12], test_labels=official["test_labels"][:12])
    cfg = load_config(None, ["model.name=student", "data.root='/nonexistent'", "partition.num_clients=3"])
    client = LocalClient(cfg, 2, 3, data_file=str(own))
    assert len(client.train_data()) == 40 and len(client.test_data()) == 12  # used whole, not a shard
    state, metrics = client.train(client.build_model().state_dict(), server_round=1)
    assert metrics["num-examples"] == 40 and client.evaluate(state)["num-examples"] == 12
    adjusted = load_config(None, ["model.name=student", "data.root='/nonexistent'", "partition.num_clients=3",
                                  "train.logit_adjustment=client_prior"])
    plain = client.build_model()
    assert LocalClient(adjusted, 2, 3, data_file=str(own)).trained_model(plain) is plain  # no federation prior to see
    np.savez(tmp_path / "bad.npz", images=official["train_images"][:4])
    with pytest.raises(FedrobustError, match="no train_images/train_labels"):
        LocalClient(cfg, 0, 3, data_file=str(tmp_path / "bad.npz")).train_data()


# real processes ---------------------------------------------------------------------------------
def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """Credentials plus the processes of one loopback deployment, each stopped by PID at the end."""

    def __init__(self, root: Path, data_root: Path) -> None:
        self.root, self.data_root = root, data_root
        self.env = dict(os.environ, FLWR_HOME=str(root / "flwr"), FEDROBUST_DATA_ROOT=str(data_root))
        self.procs: list[subprocess.Popen] = []
        self.port = _port()
        self.certs = root / "certs"
        assert self.fedrobust("deploy", "certs", "--host", "127.0.0.1", "--out", str(self.certs)).returncode == 0

    def fedrobust(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True,
                              env=self.env, cwd=REPO, timeout=timeout)

    def start(self, *args: str, log: str) -> subprocess.Popen:
        out = (self.root / log).open("w")
        proc = subprocess.Popen([sys.executable, "-m", "launcher", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=self.env, cwd=REPO)
        self.procs.append(proc)
        return proc

    def key(self, name: str) -> Path:
        assert self.fedrobust("deploy", "keys", "--name", name, "--out", str(self.root / "keys")).returncode == 0
        return self.root / "keys" / f"{name}.key"

    def superlink(self) -> None:
        self.start("deploy", "superlink", "--certs", str(self.certs), "--host", "127.0.0.1", "--port",
                   str(self.port), log="superlink.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.3)
        pytest.fail("the SuperLink did not open its port: " + (self.root / "superlink.log").read_text()[-2000:])

    def supernode_args(self, key: Path, partition: int, partitions: int, *extra: str) -> list[str]:
        return ["deploy", "supernode", "--superlink", f"127.0.0.1:{self.port}", "--root-certificates",
                str(self.certs / "ca.crt"), "--key", str(key), "--partition-id", str(partition),
                "--num-partitions", str(partitions), "--port", str(_port()), *extra]

    def supernode(self, key: Path, partition: int, partitions: int, *extra: str) -> subprocess.Popen:
        return self.start(*self.supernode_args(key, partition, partitions, *extra), log=f"node-{partition}.log")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)


def _run_args(out: Path, clients: int, *overrides: str) -> list[str]:
    sets = [f"run.out_dir='{out}'", "run.name=deployed", "model.name=student", f"partition.num_clients={clients}",
            "federation.local_epochs=1", "augment.warmup_epochs=0", "distill.epochs=1", "export.teacher=false",
            "sweep.max_images=16", "sweep.eps=[0.01]", "sweep.attacks=['fgsm']", "sweep.corruptions=false", *overrides]
    args = ["deploy", "run", "--config", str(REPO / "configs" / "quickstart.toml")]
    for s in sets:
        args += ["--set", s]
    return args


def _ours(flwr_home: str) -> list[str]:
    """Processes of this deployment: they all inherit its private FLWR_HOME."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            if p.pid != os.getpid() and p.environ().get("FLWR_HOME") == flwr_home:
                found.append(f"{p.pid} {' '.join(p.info['cmdline'] or [])[:100]}")
    return found


@pytest.fixture()
def deployment(tmp_path, data_root):
    dep = Deployment(tmp_path, data_root)
    try:
        yield dep
    finally:
        dep.stop()
    assert all(p.returncode is not None for p in dep.procs)
    assert _ours(dep.env["FLWR_HOME"]) == []  # every started process was stopped by PID


@pytest.mark.slow
def test_tls_deployment_with_two_registered_nodes(deployment):
    """Quickstart with a small model: 2 rounds over TLS, one node on a shard of the shared file and one
    on its own file; distillation, ONNX export and the sweep at the end, as in simulation. A node
    whose key is not registered, and one that lacks the federation's CA, are refused."""
    dep = deployment
    keys = [dep.key("hospital-0"), dep.key("hospital-1"), dep.key("stranger")]
    dep.superlink()
    done = dep.fedrobust("deploy", "register", str(keys[0].with_suffix(".pub")), str(keys[1].with_suffix(".pub")))
    assert done.returncode == 0 and done.stdout.count("as SuperNode") == 2, done.stdout + done.stderr

    other_ca = dep.root / "other-ca"
    assert dep.fedrobust("deploy", "certs", "--host", "127.0.0.1", "--out", str(other_ca)).returncode == 0
    untrusting = dep.supernode_args(keys[0], 0, 2, "--max-wait", "10", "--max-retries", "2")
    untrusting[untrusting.index("--root-certificates") + 1] = str(other_ca / "ca.crt")
    stranger = dep.supernode_args(keys[2], 0, 2, "--max-wait", "10", "--max-retries", "2")
    refused = {  # tried while the federation runs; log file -> Flower's reason
        "stranger.log": ("Failed to activate SuperNode", dep.start(*stranger, log="stranger.log")),
        "untrusting.log": ("CERTIFICATE_VERIFY_FAILED", dep.start(*untrusting, log="untrusting.log")),
    }
    official = np.load(dep.data_root / "breastmnist.npz")
    own = dep.root / "hospital-1.npz"
    np.savez(own, train_images=official["train_images"][273:], train_labels=official["train_labels"][273:],
             test_images=official["test_images"][:40], test_labels=official["test_labels"][:40])
    dep.supernode(keys[0], 0, 2, "--data-root", str(dep.data_root))
    dep.supernode(keys[1], 1, 2, "--data-file", str(own))
    out = dep.root / "runs"
    result = dep.fedrobust(*_run_args(out, 2, "federation.rounds=2"),
                           timeout=500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = out.iterdir()
    rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    cfg = load_config(REPO / "configs" / "quickstart.toml", ["partition.num_clients=2"])
    shard = partition_indices(official["train_labels"].ravel(), 2, cfg.partition.scheme, seed=cfg.run.seed,
                              alpha=cfg.partition.alpha, min_samples=cfg.partition.min_samples)[0]
    expected = len(shard) + len(official["train_labels"]) - 273  # node 1 trains on its whole own file
    assert all(r["replies"] == 2 and r["failures"] == 0 and r["num_examples"] == expected for r in rounds[1:])
    assert rounds[2]["clients"]["optimizer-steps"] == pytest.approx(rounds[1]["clients"]["optimizer-steps"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "federated" and summary["rounds"] == 2
    for name in ("config.toml", "model.pt", "distill/student.pt", "export/student.onnx", "export/student.int8.onnx",
                 "sweep.csv", "report.md"):
        assert (run / name).is_file(), name
    assert "round   2/2" in result.stdout and str(run) in result.stdout
    for log, (reason, node) in refused.items():
        assert node.wait(timeout=120) == 2
        last = (dep.root / log).read_text().strip().splitlines()[-1]
        assert last.startswith("fedrobust: error: SuperNode 0/2 exited") and reason in last, last


@pytest.mark.slow
def test_killed_node_continues_or_stops_clearly(deployment):
    """2 nodes, at least 1 usable update per round (the default federation.min_replies): a node killed
    once the run has started leaves a round that completes with the other; when the last one is
    killed the run stops with one line instead of carrying on without clients."""
    dep = deployment
    keys = [dep.key(f"hospital-{i}") for i in range(2)]
    dep.superlink()
    assert dep.fedrobust("deploy", "register", *(str(k.with_suffix(".pub")) for k in keys)).returncode == 0
    nodes = [dep.supernode(k, i, 2, "--data-root", str(dep.data_root)) for i, k in enumerate(keys)]
    out = dep.root / "runs"
    runner = subprocess.Popen([sys.executable, "-m", "launcher", *_run_args(
        out, 2, "federation.rounds=2", "distill.enabled=false", "export.enabled=false", "sweep.enabled=false")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dep.env, cwd=REPO)
    dep.procs.append(runner)
    assert runner.stdout is not None
    for line in runner.stdout:
        victim = 1 if "run directory" in line else 0 if "round   1/2" in line else None  # both nodes joined
        if victim is not None:
            nodes[victim].send_signal(signal.SIGTERM)
            nodes[victim].wait(timeout=60)
    _, err = runner.communicate(timeout=300)
    assert runner.returncode == 2, err[-3000:]
    assert "round 2: only 0 of 2 clients sent a usable update, 1 needed" in err and "--resume" in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    (run,) = out.iterdir()
    rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1]
    assert (rounds[1]["replies"], rounds[1]["failures"] + rounds[1]["missing"]) == (1, 1)
