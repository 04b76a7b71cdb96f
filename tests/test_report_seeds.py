"""`fedrobust report --seeds`: finished runs grouped by setting, figures by seed with mean, sd and se."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from fedrobust.config import load_config
from fedrobust.errors import FedrobustError
from fedrobust.report.seeds import seed_table
from fedrobust.rundir import RunDir


def _run(root: Path, folder: str, overrides: list[str], acc: float, fgsm: dict[str, float],
         kind: str = "federated", chosen: int = 3, finished: bool = True) -> Path:
    """A run directory as `fedrobust simulate` (or `fedrobust train`) leaves it: config.toml and summary.json."""
    cfg = load_config(None, [f"run.out_dir='{root}'", *overrides])
    run = RunDir.open(root / folder, cfg)
    if kind == "federated":
        cfg.run.dir = str(run.path)
        run.write_config(cfg)  # as the launcher writes it: with run.dir
    if finished:
        test_fgsm = {e: {"acc": a, "auc": 0.5, "loss": 1.0} for e, a in fgsm.items()}
        summary = {"kind": kind, "dataset": cfg.data.dataset, "model": cfg.model.name,
                   "test": {"acc": acc, "auc": 0.7, "loss": 0.5}, "test_fgsm": test_fgsm}
        if kind == "federated":
            summary.update({"rounds": 3, "selection": "val_auc", "selected_round": chosen})
        else:
            summary.update({"selection": "val_auc", "selected_epoch": chosen})
        run.write_summary(summary)
    return run.path


def _rows(table: str) -> list[dict[str, str]]:
    lines = [line for line in table.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]]


def _spread(values: list[float]) -> str:
    sd = statistics.stdev(values)
    return f"{statistics.mean(values):.3f} ± {sd:.3f} (se {sd / len(values) ** 0.5:.3f})"


@pytest.fixture
def study(tmp_path: Path) -> list[Path]:
    fgsm_a = [0.61, 0.55, 0.58]
    runs = [  # setting a: three seeds, named and placed differently (ignored), given out of seed order
        _run(tmp_path / "x", "a-s2", ["run.name=a-s2", "run.seed=2", "augment.mode=fgsm"], 0.80,
             {"0.003": 0.70, "0.005": fgsm_a[2]}, chosen=2),
        _run(tmp_path / "y", "a-s0", ["run.name=a-s0", "run.seed=0", "augment.mode=fgsm", "run.threads=4"], 0.75,
             {"0.003": 0.68, "0.005": fgsm_a[0]}, chosen=3),
        _run(tmp_path / "x", "a-s1", ["run.name=a-s1", "run.seed=1", "augment.mode=fgsm", "data.root='/d'"], 0.78,
             {"0.003": 0.66, "0.005": fgsm_a[1]}, chosen=1),
        # setting b: another augmentation, two seeds
        _run(tmp_path / "x", "b-s0", ["run.name=b-s0", "run.seed=0", "augment.mode=none"], 0.82,
             {"0.003": 0.40, "0.005": 0.30}),
        _run(tmp_path / "x", "b-s1", ["run.name=b-s1", "run.seed=1", "augment.mode=none"], 0.84,
             {"0.003": 0.44, "0.005": 0.36}),
        # setting a's config trained centrally: another setting
        _run(tmp_path / "x", "c-s0", ["run.name=c-s0", "run.seed=0", "augment.mode=fgsm"], 0.86,
             {"0.003": 0.72, "0.005": 0.65}, kind="centralized", chosen=7),
    ]
    return runs


def test_runs_are_grouped_by_setting_with_mean_and_sd_over_seeds(study):
    table = seed_table(study)
    rows = _rows(table)
    assert [r["setting"] for r in rows] == ["a", "b", "c"]  # in the order of the arguments
    assert [r["differs by"] for r in rows] == ["augment.mode=fgsm, kind=federated", "augment.mode=none, kind=federated",
                                               "augment.mode=fgsm, kind=centralized"]
    a, b, c = rows
    assert a["runs"] == "3" and a["seeds"] == "0, 1, 2"
    assert a["test ACC by seed"] == "0.750 / 0.780 / 0.800"
    assert a["test ACC mean ± sd (se)"] == _spread([0.75, 0.78, 0.80]) == "0.777 ± 0.025 (se 0.015)"
    assert a["FGSM@0.005 by seed"] == "0.610 / 0.550 / 0.580"
    assert a["FGSM@0.005 mean ± sd (se)"] == _spread([0.61, 0.55, 0.58]) == "0.580 ± 0.030 (se 0.017)"
    assert a["FGSM@0.003 mean ± sd (se)"] == _spread([0.68, 0.66, 0.70])
    assert a["selected round / epoch by seed"] == "3 / 1 / 2"
    assert b["seeds"] == "0, 1" and b["test ACC mean ± sd (se)"] == _spread([0.82, 0.84])
    assert b["FGSM@0.005 mean ± sd (se)"] == "0.330 ± 0.042 (se 0.030)"
    assert c["runs"] == "1" and c["test ACC mean ± sd (se)"] == "0.860"  # one seed: no spread
    assert c["selected round / epoch by seed"] == "7"
    assert table.startswith("6 finished runs in 3 settings (they differ in augment.mode, kind)")
    assert list(rows[0])[6:10] == ["FGSM@0.003 by seed", "FGSM@0.003 mean ± sd (se)", "FGSM@0.005 by seed",
                                   "FGSM@0.005 mean ± sd (se)"]


def test_one_setting_names_what_it_is(study):
    table = seed_table(study[:3])
    (row,) = _rows(table)
    assert row["differs by"] == "–" and row["seeds"] == "0, 1, 2"
    assert table.startswith("3 finished runs in 1 setting (breastmnist · resnet18 · federated)")


def test_a_folder_that_is_not_a_finished_run_is_one_line(study, tmp_path):
    unfinished = _run(tmp_path / "x", "d-s0", ["run.name=d-s0"], 0.0, {}, finished=False)
    with pytest.raises(FedrobustError, match=r"d-s0: not finished \(no summary\.json\)") as err:
        seed_table([*study, unfinished])
    assert "\n" not in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FedrobustError, match=r"empty: not a run directory \(no config\.toml\) \(and 1 more\)") as err:
        seed_table([empty, unfinished, *study])
    assert "\n" not in str(err.value)
    with pytest.raises(FedrobustError, match="not a folder"):
        seed_table([tmp_path / "missing"])
    with pytest.raises(FedrobustError, match="no run directories"):
        seed_table([])
