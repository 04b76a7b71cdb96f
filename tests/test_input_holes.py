"""Bad input that used to escape as a traceback, a hang or a silent wrong result: one line, exit 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_fake_medmnist
from PIL import Image

from fedrobust.config import load_config
from fedrobust.edge.images import EdgeError, load_image
from fedrobust.errors import ConfigError
from fedrobust.rundir import RunDir, RunDirBusy
from launcher.cli import main
from launcher.processes import last_error

REPO = Path(__file__).resolve().parents[1]


def _err(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_a_config_that_is_not_utf8(tmp_path, capsys):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('[run]\nname = "caf\xe9"\n'.encode("latin-1"))
    assert "not UTF-8" in _err(capsys, ["train", "--config", str(bad)])


@pytest.mark.parametrize("override", ["train.lr=inf", "distill.temperature=nan", "federation.server_lr=inf",
                                      "augment.eps=nan", "eval.fgsm_eps=[0.001, inf]", "sweep.eps=[nan]"])
def test_numbers_must_be_finite(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}(\[\d\])?: must be a finite number"):
        load_config(None, [override])


def test_a_training_loss_that_becomes_non_finite_stops_without_a_model(tmp_path, capsys):
    write_fake_medmnist(tmp_path / "data", "breastmnist")
    err = _err(capsys, ["train", "--data-root", str(tmp_path / "data"), "--set", "data.verify_md5=false",
                        "--set", "model.name=student", "--set", "train.epochs=2", "--set", "train.lr=1e30",
                        "--set", "train.optimizer=sgd",
                        "--set", "train.batch_size=8", "--set", f"run.out_dir='{tmp_path / 'runs'}'",
                        "--set", "sweep.enabled=false"])
    assert "training loss became nan" in err and "train.lr" in err
    (run,) = (tmp_path / "runs").iterdir()
    assert not (run / "model.pt").exists() and not (run / "summary.json").exists()


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    err = _err(capsys, ["simulate", "--resume", str(tmp_path / "missing")])
    assert "not a run directory" in err and "configs/quickstart.toml" not in err


def test_partition_can_be_kept_from_downloading(tmp_path, capsys):
    err = _err(capsys, ["partition", "--dataset", "dermamnist", "--data-root", str(tmp_path), "--no-download"])
    assert "download is off" in err


def test_register_names_a_missing_key_before_the_connection(tmp_path, capsys):
    err = _err(capsys, ["deploy", "register", str(tmp_path / "missing.pub"), "--connection", "nowhere"])
    assert "missing.pub does not exist" in err


def test_supernode_refuses_a_file_that_is_not_a_certificate(tmp_path, capsys):
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate\n")
    err = _err(capsys, ["deploy", "supernode", "--superlink", "127.0.0.1:9092", "--root-certificates", str(bad),
                        "--no-auth", "--partition-id", "0", "--num-partitions", "2"])
    assert "is not a PEM certificate" in err


def test_supernode_refuses_a_data_root_without_the_dataset(tmp_path, capsys):
    err = _err(capsys, ["deploy", "supernode", "--superlink", "127.0.0.1:9092", "--insecure", "--no-auth",
                        "--partition-id", "0", "--num-partitions", "2", "--data-root", str(tmp_path)])
    assert "holds no MedMNIST .npz file" in err


def test_the_failure_reason_is_flowers_not_its_box_title(tmp_path):
    log = tmp_path / "flower.log"
    log.write_text("INFO : Starting\n╭──────────── Error ────────────╮\n│ Run 123 failed: the ServerApp raised │\n"
                   "│ FileNotFoundError                    │\n╰──────────────────────────────╯\n"
                   "INFO : SuperLink stopped\n")
    assert last_error(log) == "Run 123 failed: the ServerApp raised FileNotFoundError"


def test_simulate_checks_every_value_before_starting_any_process(tmp_path, flower_processes):
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "launcher", "simulate", "--set", "federation.eval_eps=2",
                             "--set", f"run.out_dir='{tmp_path}'"], capture_output=True, text=True, timeout=60,
                            cwd=REPO)
    assert result.returncode == 2 and "federation.eval_eps: must be in [0, 1]" in result.stderr
    assert time.time() - started < 10 and flower_processes(started) == [] and not any(tmp_path.iterdir())  # no start-up


def test_one_writer_per_run_directory_and_a_dead_holder_keeps_nothing(tmp_path, capsys):
    run = RunDir(tmp_path)
    run.write_config(load_config(None))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from fedrobust.rundir import RunDir; "
                               f"RunDir({str(tmp_path)!r}).hold('fedrobust simulate'); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirBusy, match=f"in use by PID {holder.pid} \\(fedrobust simulate\\)"):
        run.hold("fedrobust distill")
    assert f"in use by PID {holder.pid}" in _err(capsys, ["export", str(tmp_path)])
    holder.kill()  # a dead holder: the operating system has dropped its lock
    holder.wait()
    assert run.hold("fedrobust distill")["pid"] == holder.pid  # taken over; the previous holder is reported
    run.release()


def test_sigterm_exits_143_after_stopping_what_it_started(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, FLWR_HOME=str(tmp_path / "flwr"))
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "deploy", "superlink", "--insecure", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out[-1000:]


def test_edge_reads_float_tiffs_in_0_1_and_refuses_ambiguous_ones(tmp_path):
    ramp = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    Image.fromarray(ramp, mode="F").save(tmp_path / "float.tif")
    x = load_image(tmp_path / "float.tif", 1, 28)
    np.testing.assert_allclose(x[0], ramp, atol=1e-6)  # not black
    Image.fromarray(ramp * 255, mode="F").save(tmp_path / "float255.tif")
    with pytest.raises(EdgeError, match="float image with values from 0 to 255"):
        load_image(tmp_path / "float255.tif", 1, 28)
    Image.fromarray((ramp * 100000).astype(np.int32), mode="I").save(tmp_path / "int32.tif")
    with pytest.raises(EdgeError, match="32-bit integer image"):
        load_image(tmp_path / "int32.tif", 1, 28)


def test_a_deploy_process_whose_main_thread_died_ends_its_wrapper_with_the_reason():
    """Flower's SuperNode, on a bad certificate, prints a traceback and lives on in its other threads."""
    from fedrobust.errors import FedrobustError
    from launcher.deployment import serve

    zombie = [sys.executable, "-c", "import threading, time; threading.Thread(target=time.sleep, args=(120,)).start(); "
              "raise RuntimeError('no start line: cadata does not contain a certificate')"]
    started = time.monotonic()
    with pytest.raises(FedrobustError, match="SuperNode 0/2 failed: RuntimeError: no start line"):
        serve(zombie, dict(os.environ), "SuperNode 0/2", echo=lambda _: None)
    assert time.monotonic() - started < 30
