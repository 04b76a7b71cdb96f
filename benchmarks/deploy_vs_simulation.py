"""Wall time of the same federation deployed (SuperLink + 2 SuperNodes over TLS with node
authentication, every part a separate `fedrobust deploy ...` process on loopback) and simulated
(`fedrobust simulate`, Ray), measured back to back in one run (deployment issue).

Same config, seed and partitions both ways; the final test accuracies are printed as a check that
the two engines did the same work.

    python benchmarks/deploy_vs_simulation.py [--rounds 3] [--model resnet18]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command, describe, write_report
from _simrun import simulate

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/quickstart.toml"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fedrobust(env: dict[str, str], *args: str, log: Path | None = None) -> subprocess.Popen:
    out = log.open("w") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "launcher", *args], stdout=out, stderr=subprocess.STDOUT,
                            env=env, cwd=ROOT)


def deployed(overrides: list[str], work: Path, out_dir: Path) -> dict:
    """Start everything as an operator would; return wall times and the run directory."""
    env = dict(os.environ, FLWR_HOME=str(work / "flwr"))
    port = _port()
    procs: list[subprocess.Popen] = []
    t0 = time.time()
    try:
        assert _fedrobust(env, "deploy", "certs", "--host", "127.0.0.1", "--out", str(work / "certs")).wait() == 0
        for k in range(2):
            assert _fedrobust(env, "deploy", "keys", "--name", f"h{k}", "--out", str(work / "keys")).wait() == 0
        procs.append(_fedrobust(env, "deploy", "superlink", "--certs", str(work / "certs"), "--host", "127.0.0.1",
                                "--port", str(port), log=work / "superlink.log"))
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            time.sleep(0.2)
        assert _fedrobust(env, "deploy", "register", *(str(work / "keys" / f"h{k}.pub") for k in range(2))).wait() == 0
        for k in range(2):
            procs.append(_fedrobust(env, "deploy", "supernode", "--superlink", f"127.0.0.1:{port}",
                                    "--root-certificates", str(work / "certs" / "ca.crt"), "--key",
                                    str(work / "keys" / f"h{k}.key"), "--partition-id", str(k), "--num-partitions",
                                    "2", "--port", str(_port()), log=work / f"node{k}.log"))
        ready = time.time() - t0
        args = ["deploy", "run", "--config", str(ROOT / CONFIG), "--set", f"run.out_dir='{out_dir}'",
                "--set", "sweep.enabled=false"]
        for o in overrides:
            args += ["--set", o]
        started = time.time()
        assert _fedrobust(env, *args, log=work / "run.log").wait() == 0, (work / "run.log").read_text()[-2000:]
        run_wall = time.time() - started
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    (run,) = [p for p in out_dir.iterdir() if p.is_dir()]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"run": run, "metrics": metrics, "summary": json.loads((run / "summary.json").read_text()),
            "ready": ready, "wall": run_wall, "total": time.time() - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--out", default=str(ROOT / "runs/results/deploy_vs_simulation.md"))
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "bench-deploy"))
    args = p.parse_args()
    overrides = [f"model.name={args.model}", "partition.num_clients=2", f"federation.rounds={args.rounds}",
                 "simulation.cpus_per_client=1", "distill.enabled=false", "export.enabled=false"]
    runs = Path(args.runs_dir) / time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="fedrobust-bench-deploy-") as tmp:
        dep = deployed(overrides, Path(tmp), runs / "deployed")
    sim = simulate(CONFIG, overrides, runs / "simulated", log_file=runs / "simulate.log")

    def rounds(r: dict) -> list[float]:
        return [m["seconds"] for m in r["metrics"] if m["round"] > 0]

    lines = [
        "# Deployed vs simulated federation (deployment issue)", "",
        f"Command: `{command()}`  ",
        f"Machine: {describe()}", "",
        f"{CONFIG} with {' '.join(overrides)}: BreastMNIST, {args.model}, 2 clients (Dirichlet 0.5), "
        "FGSM + inverse-FGSM local augmentation, server-side evaluation every round; "
        "no distillation/export/sweep (training only). "
        "Deployed: SuperLink + 2 SuperNodes, each a separate `fedrobust deploy` process on 127.0.0.1, TLS and "
        "SuperNode authentication on; the time of `fedrobust deploy run`. Simulated: `fedrobust simulate` "
        "(its own SuperLink + Ray, 1 CPU per virtual client), whole command. Measured back to back.", "",
        "| engine | wall s | start-up s | " + " | ".join(f"round {i + 1} s" for i in range(args.rounds))
        + " | test acc | test auc |",
        "| --- | --- | --- | " + " | ".join("---" for _ in range(args.rounds)) + " | --- | --- |",
        f"| deployed (TLS + auth) | {dep['wall']:.1f} | {dep['ready']:.1f} (certs, keys, SuperLink, register, "
        "2 nodes) | "
        + " | ".join(f"{s:.1f}" for s in rounds(dep))
        + f" | {dep['summary']['test']['acc']:.3f} | {dep['summary']['test']['auc']:.3f} |",
        f"| simulated (Ray) | {sim['wall']:.1f} | (inside wall) | " + " | ".join(f"{s:.1f}" for s in rounds(sim))
        + f" | {sim['summary']['test']['acc']:.3f} | {sim['summary']['test']['auc']:.3f} |", "",
        f"Deployed / simulated wall time: **{dep['wall'] / sim['wall']:.2f}x** "
        f"(sum of round times: {sum(rounds(dep)) / sum(rounds(sim)):.2f}x).", "",
        f"Run directories: `{dep['run']}`, `{sim['run']}`.",
    ]
    print(write_report(args.out, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
