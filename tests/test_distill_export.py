"""Distillation, ONNX export (parity, metadata, int8) and the edge runtime on exported files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from fedrobust.attacks.gradient import classification_loss
from fedrobust.checkpoint import load_model, run_config, weights_sha256
from fedrobust.data.loading import load_from_config
from fedrobust.distill.loss import distillation_loss, soft_kl
from fedrobust.edge.metadata import ModelMetadata
from fedrobust.edge.model import EdgeModel
from launcher.cli import main

# ---- the loss -------------------------------------------------------------------------------


def test_soft_kl_is_zero_for_identical_outputs_and_scaled_by_t_squared():
    torch.manual_seed(0)
    s, t = torch.randn(8, 3), torch.randn(8, 3)
    assert float(soft_kl(s, s, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_kl(s, t, 2.0)) > 0
    # T^2 scaling: the soft term at temperature T equals T^2 * plain KL of the logits divided by T
    plain = torch.nn.functional.kl_div(torch.log_softmax(s / 3, 1), torch.log_softmax(t / 3, 1),
                                       log_target=True, reduction="batchmean")
    assert float(soft_kl(s, t, 3.0)) == pytest.approx(9 * float(plain), rel=1e-5)


def test_alpha_mixes_hard_and_soft_terms():
    torch.manual_seed(1)
    s, t, y = torch.randn(6, 2), torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    assert float(distillation_loss(s, t, y, 4.0, 1.0)) == pytest.approx(float(classification_loss(s, y)))
    assert float(distillation_loss(s, t, y, 4.0, 0.0)) == pytest.approx(float(soft_kl(s, t, 4.0)))
    expected = 0.25 * float(classification_loss(s, y)) + 0.75 * float(soft_kl(s, t, 4.0))
    s.requires_grad_(True)
    mixed = distillation_loss(s, t, y, 4.0, 0.25)
    assert float(mixed.detach()) == pytest.approx(expected)
    mixed.backward()  # the teacher gets no gradient; the student does
    assert s.grad is not None and float(s.grad.abs().sum()) > 0


# ---- a whole run: train -> distill -> export -> edge -------------------------------------------


def test_distillation_writes_student_metrics_and_summary(trained_run):
    d = trained_run / "distill"
    assert {"student.pt", "metrics.jsonl", "config.toml", "summary.json"} <= {p.name for p in d.iterdir()}
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    s = json.loads((d / "summary.json").read_text())
    assert s["transfer_set"] == "val" and s["transfer_images"] == 78  # the server's split, not train
    assert s["teacher"]["test"]["acc"] == json.loads((trained_run / "summary.json").read_text())["test"]["acc"]
    assert s["acc_drop_points"] == pytest.approx(100 * (s["teacher"]["test"]["acc"] - s["student"]["test"]["acc"]))
    assert 0 <= s["test_agreement"] <= 1
    assert not any(p.name.startswith(".distill") for p in trained_run.iterdir())  # no staging left behind


def test_export_files_metadata_and_parity(trained_run):
    e = trained_run / "export"
    assert {"student.onnx", "student.int8.onnx", "teacher.onnx", "summary.json"} <= {p.name for p in e.iterdir()}
    assert not list(e.glob("*.data"))  # one self-contained file each
    proto = onnx.load(str(e / "student.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    meta = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    assert (meta.dataset, meta.channels, meta.image_size, meta.precision) == ("breastmnist", 1, 28, "fp32")
    assert meta.class_names == ["malignant", "normal, benign"]
    cfg = run_config(trained_run)
    student = load_model(cfg, trained_run / "distill" / "student.pt", "student")
    assert meta.weights_sha256 == weights_sha256(student)
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # dynamic batch
    s = json.loads((e / "summary.json").read_text())
    assert s["student"]["parity"]["max_abs_diff"] <= 1e-4 and s["student"]["parity"]["same_predictions"]
    assert s["student"]["parity"]["images"] == 156  # the whole test split
    assert s["student_int8"]["bytes"] < s["student"]["bytes"] / 2
    int8_meta = EdgeModel(e / "student.int8.onnx").metadata
    assert int8_meta.precision == "int8" and int8_meta.weights_sha256 == meta.weights_sha256


def test_edge_model_matches_torch_on_the_test_split(trained_run):
    cfg = run_config(trained_run)
    test = load_from_config(cfg.data, "test")
    student = load_model(cfg, trained_run / "distill" / "student.pt", "student")
    with torch.no_grad():
        expected = student(test.images).numpy()
    edge = EdgeModel(trained_run / "export" / "student.onnx")
    got = edge.predict_logits(test.images.numpy())
    assert np.abs(got - expected).max() <= 1e-4
    int8 = EdgeModel(trained_run / "export" / "student.int8.onnx").predict_logits(test.images.numpy())
    assert (int8.argmax(1) == expected.argmax(1)).mean() >= 0.9  # quantized, not identical, but close


def test_edge_cli_on_an_exported_model_and_the_official_npz(trained_run, data_root):
    result = subprocess.run([sys.executable, "-m", "fedrobust.edge.cli", "predict",
                             str(trained_run / "export" / "student.onnx"), "--npz", str(data_root / "breastmnist.npz")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    summary = json.loads((trained_run / "export" / "summary.json").read_text())
    assert len(out["predictions"]) == 156
    assert out["accuracy"] == pytest.approx(summary["student"]["test"]["acc"], abs=1e-6)


def test_parity_failure_fails_the_export_and_keeps_the_previous_one(trained_run, capsys):
    before = (trained_run / "export" / "summary.json").read_text()
    code = main(["export", str(trained_run), "--set", "export.parity_atol=1e-12", "--set", "export.int8=false"])
    assert code == 2
    err = capsys.readouterr().err
    assert "onnxruntime disagrees with torch" in err and err.count("\n") == 1
    assert (trained_run / "export" / "summary.json").read_text() == before
    assert not [p for p in trained_run.iterdir() if p.name.startswith(".export")]


def test_export_needs_a_distilled_student(tmp_path, trained_run, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.toml", "model.pt"):
        (run / name).write_bytes((trained_run / name).read_bytes())
    assert main(["export", str(run)]) == 2
    assert "fedrobust distill" in capsys.readouterr().err


def test_distill_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["distill", str(tmp_path)]) == 2
    assert "not a fedrobust run directory" in capsys.readouterr().err


def test_adversarial_distillation_runs_and_keeps_teacher_unchanged(trained_run):
    from fedrobust.distill import distill

    cfg = run_config(trained_run, ["distill.epochs=1", "distill.adversarial=pgd", "distill.adv_steps=2",
                                   "distill.classic=[]"])
    teacher = load_model(cfg, trained_run / "model.pt")
    before = weights_sha256(teacher)
    _, summary = distill(cfg, teacher, log=lambda _: None)
    assert weights_sha256(teacher) == before
    assert summary["settings"]["adversarial"] == "pgd" and summary["selected_epoch"] == 1


def test_one_logit_heads_are_distilled_and_compared_not_silently_equal():
    """softmax over one logit is 1 everywhere and its argmax always 0: the KL term and every agreement
    would vanish on a single-logit head (the binary classifier's, or a mask head's per pixel)."""
    from fedrobust.predict import predicted

    s, t = torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([[-3.0], [1.0], [0.5]])
    assert float(soft_kl(t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)
    p, q = torch.sigmoid(t / 2), torch.sigmoid(s / 2)
    exact = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean() * 4
    assert float(soft_kl(s, t, 2.0)) == pytest.approx(float(exact), rel=1e-5) and float(exact) > 0.1
    assert predicted(s).tolist() == [1, 0, 1] and predicted(s.numpy()).tolist() == [1, 0, 1]
    assert predicted(torch.tensor([[0.1, 0.9], [2.0, -1.0]])).tolist() == [1, 0]
