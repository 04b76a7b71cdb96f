"""Attack sweeps: the long-format table, resume without recomputation, sanity checks, report, compare."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from fedrobust.checkpoint import run_config
from fedrobust.sweep import sweep
from fedrobust.sweep.cells import redundant
from fedrobust.sweep.checks import run_checks
from fedrobust.sweep.results import PARTIAL, settings_blob, sweep_images
from fedrobust.sweep.run import plan
from launcher.cli import main

SMALL = ["sweep.max_images=48", "sweep.eps=[0.004, 0.0118, 0.1176]", "sweep.square_queries=30", "sweep.pgd_steps=5",
         "sweep.apgd_steps=10", "run.threads=1"]


def _rows(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def swept(trained_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("swept") / "run"
    shutil.copytree(trained_run, run)
    assert main(["sweep", str(run), *[a for o in SMALL for a in ("--set", o)]]) == 0
    return run


@pytest.mark.slow
def test_sweep_table_is_long_format_over_every_target_attack_and_eps(swept):
    rows = _rows(swept / "sweep.csv")
    assert list(rows[0]) == ["target", "attack", "eps", "accuracy", "auc", "accuracy_8bit", "n", "seconds",
                             "mean_queries"]
    cfg = run_config(swept, SMALL)
    cells = plan(cfg, ["global", "student", "onnx_fp32", "onnx_int8"], redundant(cfg.sweep.attacks, 2, False))
    assert [(r["target"], r["attack"], r["eps"]) for r in rows] == [c.key for c in cells]
    assert not {"fgsm-margin", "pgd-margin"} & {r["attack"] for r in rows}  # a two-class head: equal to fgsm, pgd
    assert "Not run: fgsm-margin, pgd-margin; on this two-class head they equal fgsm, pgd" in (
        swept / "report.md").read_text()
    assert {r["n"] for r in rows} == {"48"}
    assert not [r for r in rows if r["target"] == "global" and r["attack"].startswith("transfer")]
    square = [r for r in rows if r["attack"] == "square"]
    assert square and all(1 <= float(r["mean_queries"]) <= 4 * 31 for r in square)  # ART: ~3 batches per step
    assert {r["target"] for r in square} == {"onnx_fp32", "onnx_int8"}  # black-box: the deployed model only
    assert not (swept / PARTIAL).exists()


def test_white_box_attacks_hurt_and_pgd_is_at_least_as_strong_as_fgsm(swept):
    acc = {(r["target"], r["attack"], float(r["eps"])): float(r["accuracy"]) for r in _rows(swept / "sweep.csv")}
    clean = acc[("global", "clean", 0.0)]
    assert acc[("global", "pgd", 0.1176)] < clean  # a real attack, not a no-op
    assert acc[("global", "pgd", 0.1176)] <= 0.05  # eps = 30/255 breaks a 28 px model
    for eps in (0.004, 0.0118, 0.1176):
        assert acc[("global", "pgd", eps)] <= acc[("global", "fgsm", eps)] + 0.02
    assert acc[("onnx_fp32", "clean", 0.0)] == acc[("student", "clean", 0.0)]


def test_autoattack_is_the_per_image_worst_case_and_the_headline(swept):
    rows = _rows(swept / "sweep.csv")
    acc = {(r["target"], r["attack"], float(r["eps"])): float(r["accuracy"]) for r in rows}
    for target in ("global", "student", "onnx_fp32", "onnx_int8"):
        for eps in (0.004, 0.0118, 0.1176):
            worst = acc[(target, "autoattack", eps)]
            # its components FGSM, PGD and APGD-CE, reused exactly (the int8 student falls to FGSM where APGD misses)
            assert worst <= min(acc[(target, a, eps)] for a in ("fgsm", "pgd", "apgd-ce")) + 1e-9
            assert worst <= acc[(target, "noise", eps)] + 0.03
    assert acc[("global", "autoattack", 0.1176)] <= 0.05  # (this 3-epoch student predicts one class throughout)
    on_grid = [r for r in rows if r["attack"] == "clean"]  # MedMNIST pixels are 8-bit: rounding changes nothing
    assert all(r["accuracy"] == r["accuracy_8bit"] for r in on_grid)
    robust = json.loads((swept / "summary.json").read_text())["robust"]
    assert robust["attack"].startswith("autoattack") and "evasion" in robust["threat_model"]
    assert robust["by_target"]["onnx_int8"]["0.004"] == acc[("onnx_int8", "autoattack", 0.004)]
    report = (swept / "report.md").read_text()
    assert "## Headline: robust accuracy under autoattack" in report and "(1 gl)" in report


def test_apgd_dlr_on_a_binary_set_is_refused_before_anything_is_written(swept, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(swept, run)
    (run / "sweep.csv").unlink()
    assert main(["sweep", str(run), "--attacks", "apgd-dlr"]) == 2
    assert "apgd-dlr needs >= 3 classes" in capsys.readouterr().err
    assert not (run / PARTIAL).exists() and not (run / PARTIAL).with_suffix(".json").exists()


def test_corruptions_table_report_and_plot(swept):
    rows = _rows(swept / "corruptions.csv")
    assert list(rows[0]) == ["target", "corruption", "severity", "accuracy", "auc", "n"]
    assert len(rows) == 4 * 11 * 5 and {r["n"] for r in rows} == {"48"}
    acc = {(r["target"], r["corruption"], r["severity"]): float(r["accuracy"]) for r in rows}
    assert acc[("onnx_fp32", "jpeg", "3")] == acc[("student", "jpeg", "3")]  # the same images for every target
    report = (swept / "report.md").read_text()
    assert "## Common corruptions" in report and "| torch global model |" in report.split("## Common")[1]
    assert (swept / "plots" / "corruptions.png").stat().st_size > 1000


def test_report_checks_and_plots(swept):
    report = (swept / "report.md").read_text()
    assert "## Sanity checks" in report and "### pgd" in report and "| torch global model |" in report
    checks = json.loads((swept / "checks.json").read_text())
    names = {c["name"] for c in checks}
    assert {"PGD ≤ FGSM", "square ≥ best white-box", "clean ONNX fp32 = torch", "APGD-CE ≤ PGD (one image)",
            "worst case ≤ every attack"} <= names
    assert next(c for c in checks if c["name"] == "clean ONNX fp32 = torch")["ok"]
    for name in ("sweep_global.png", "sweep_onnx_int8.png", "rounds.png"):
        assert (swept / "plots" / name).stat().st_size > 1000


def test_a_stopped_sweep_resumes_without_recomputing(swept, capsys):
    """Keep all but the last 3 cells as an interrupted sweep would have; those (autoattack, whose APGD-CE
    images are no longer in memory) are recomputed identically."""
    cfg = run_config(swept, SMALL)
    full = (swept / "sweep.csv").read_text().splitlines()
    kept = len(full) - 1 - 3
    (swept / PARTIAL).write_text("\n".join(full[:1 + kept]) + "\n")
    (swept / PARTIAL).with_suffix(".json").write_text(settings_blob(cfg, len(sweep_images(cfg))))
    (swept / "sweep.csv").unlink()
    lines = []
    sweep(cfg, swept, log=lines.append)
    assert any(f"{kept} of {len(full) - 1} cells already done" in line for line in lines)
    assert all(r.split(",")[1] == "autoattack" for r in full[1 + kept:])
    again = (swept / "sweep.csv").read_text().splitlines()
    strip = [",".join(x.split(",")[:6]) for x in again]  # drop the timing columns
    assert strip == [",".join(x.split(",")[:6]) for x in full]


def test_checks_flag_violations():
    rows = [{"target": "global", "attack": a, "eps": e, "accuracy": v, "auc": 0.5}
            for a, e, v in [("clean", 0.0, 0.9), ("fgsm", 0.01, 0.5), ("pgd", 0.01, 0.7),  # PGD weaker: masking?
                            ("square", 0.01, 0.3), ("fgsm", 0.2, 0.6), ("pgd", 0.2, 0.6)]]
    checks = {c.name: c for c in run_checks(rows, chance=0.5, tol=0.02, column="accuracy", label="accuracy")}
    assert not checks["PGD ≤ FGSM"].ok and "0.01" in checks["PGD ≤ FGSM"].detail
    assert not checks["square ≥ best white-box"].ok
    assert not checks["accuracy falls as eps grows"].ok
    assert not checks["toward chance at the largest eps"].ok


def test_a_rise_that_stays_under_chance_is_no_violation():
    """An attack that drives a mask head to all-background (IoU 0) at one eps and all-polyp (the floor) at the
    next has succeeded at both; a rise above the floor is still flagged."""
    def checks(top: float) -> dict:
        rows = [{"target": "student", "attack": "fgsm", "eps": e, "iou": v}
                for e, v in [(0.0, 0.4), (8 / 255, 0.0), (0.1176, top)]]
        return {c.name: c for c in run_checks(rows, chance=0.144, tol=0.02, column="iou", label="IoU")}
    assert checks(0.144)["IoU falls as eps grows"].ok
    assert not checks(0.25)["IoU falls as eps grows"].ok


def test_report_compares_runs(swept, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(swept, other)
    out = tmp_path / "not" / "yet" / "cmp.md"  # --out into a folder that does not exist: created
    assert main(["report", str(swept), str(other), "--attack", "pgd", "--target", "onnx_int8", "--out", str(out)]) == 0
    text = out.read_text()
    assert "ONNX int8 student under pgd" in text and text.count("| breastmnist") == 2
    assert out.with_suffix(".png").stat().st_size > 1000
    assert main(["report", str(tmp_path)]) == 2
    assert "no sweep.csv" in capsys.readouterr().err


def test_margin_twins_are_skipped_only_where_they_equal_the_cross_entropy_attacks():
    """On two logits FGSM-margin is FGSM bit for bit (so the sweep skips it); not on three, not when asked alone,
    not when a gradient saturated."""
    from fedrobust.attacks import fgsm
    from fedrobust.models import build_model

    torch.manual_seed(0)
    model = build_model("student", 1, 2, 28).eval()
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 2, (16,))
    assert torch.equal(fgsm(model, x, y, 0.01, "ce"), fgsm(model, x, y, 0.01, "margin"))
    both = ["fgsm", "pgd", "fgsm-margin", "pgd-margin"]
    assert redundant(both, 2, saturated=False) == {"fgsm-margin": "fgsm", "pgd-margin": "pgd"}
    assert redundant(both, 3, saturated=False) == {} and redundant(both, 2, saturated=True) == {}
    assert redundant(["fgsm-margin", "pgd"], 2, saturated=False) == {}


def test_one_step_cells_share_one_gradient_and_equal_the_attack_functions():
    """FGSM, inverse FGSM and transfer FGSM at every eps come from one input gradient per model and loss, and
    give exactly what fgsm() / invfgsm() give."""
    from fedrobust.attacks import fgsm, invfgsm
    from fedrobust.config import SweepSection
    from fedrobust.models import build_model
    from fedrobust.sweep.cells import Cell, craft
    from fedrobust.sweep.targets import Target
    from fedrobust.tasks.registry import task_of

    torch.manual_seed(0)
    model = build_model("student", 1, 2, 28).eval()
    x, y = torch.rand(300, 1, 28, 28), torch.randint(0, 2, (300,))  # more than one batch of 256
    task, memo, target = task_of("classification"), {}, Target("global", model)
    def batched(fn, *args):  # the sweep's batches of 256
        return torch.cat([fn(model, x[i:i + 256], y[i:i + 256], *args) for i in (0, 256)])

    for eps in (0.004, 0.03):
        for attack, reference in (("fgsm", batched(fgsm, eps)), ("invfgsm", batched(invfgsm, eps)),
                                  ("fgsm-margin", batched(fgsm, eps, task.margin))):
            out, _ = craft(Cell("global", attack, eps), target, model, x, y, SweepSection(), 0, task, memo)
            assert torch.equal(out, reference), (attack, eps)
    assert len([k for k in memo if k[0] == "gradient"]) == 2  # cross-entropy and margin, reused across eps
