import json
import subprocess
import sys
import tomllib

from fedrobust.config import from_dict
from launcher.cli import main


def test_centralized_run_writes_a_complete_run_directory(data_root, tmp_path, capsys):
    code = main(["train", "--data-root", str(data_root),
                 "--set", f"run.out_dir='{tmp_path}'", "--set", "run.name=t",
                 "--set", "model.name=student", "--set", "train.epochs=2",
                 "--set", "augment.mode=both", "--set", "augment.fused=true", "--set", "augment.eps=0.004",
                 "--set", "eval.fgsm_eps=[0.0, 0.05]", "--set", "sweep.eps=[0.01, 0.1176]",
                 "--set", "sweep.attacks=['fgsm']", "--set", "sweep.max_images=32", "--set", "sweep.corruptions=false"])
    assert code == 0
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("t-")
    assert {"config.toml", "metrics.jsonl", "summary.json", "model.pt", "last.pt"} <= {p.name for p in run.iterdir()}
    cfg = from_dict(tomllib.loads((run / "config.toml").read_text()))
    assert cfg.data.root == str(data_root) and cfg.augment.mode == "both"
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert lines[0]["train"]["adv_share"] > 0.6 and 0 <= lines[0]["val"]["acc"] <= 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["acc"] == summary["test_fgsm"]["0"]["acc"]  # eps 0 is the clean test set
    assert summary["test_fgsm"]["0.05"]["acc"] <= summary["test"]["acc"]
    out = capsys.readouterr().out
    assert str(run) in out and "seconds per phase: training" in out and " sweep " in out
    assert "left out of the default attacks: pgd, fgsm-margin" in out  # sweep.attacks = ['fgsm'] here
    assert set(summary_after(run)["phase_seconds"]) == {"training", "sweep"}
    assert (run / "sweep.csv").is_file() and (run / "plots" / "rounds.png").is_file()  # sweep on by default


def summary_after(run):
    return json.loads((run / "summary.json").read_text())


def test_bad_config_is_one_line_without_traceback(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[augment]\neps = -0.1\n")
    result = subprocess.run([sys.executable, "-m", "fedrobust", "train", "--config", str(cfg)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "augment.eps" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_data_fails_before_creating_a_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fedrobust", "train", "--data-root", str(tmp_path),
                             "--set", "data.download=false", "--set", f"run.out_dir='{tmp_path / 'runs'}'"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "breastmnist.npz not found" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_help_explains_itself():
    result = subprocess.run([sys.executable, "-m", "fedrobust", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "partition" in result.stdout and "FEDROBUST_DATA_ROOT" in result.stdout
