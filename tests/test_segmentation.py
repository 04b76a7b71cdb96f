"""Segmentation through the task seam, on real Kvasir-SEG images (small sizes so the suite stays fast)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from fedrobust.attacks import fgsm, invfgsm
from fedrobust.config import AugmentSection, DataSection, PartitionSection, TrainSection, load_config
from fedrobust.distill.loss import distillation_loss, soft_kl
from fedrobust.errors import ConfigError
from fedrobust.export.onnx_export import ExportError, check_parity, export_onnx
from fedrobust.models.registry import build_model
from fedrobust.tasks.registry import task_of
from fedrobust.train.local import make_optimizer, train_epoch
from launcher.cli import main

SEG = task_of("segmentation")
SIZE = 32


@pytest.fixture(scope="module")
def seg_data(seg_root):
    data = DataSection(task="segmentation", dataset="kvasir-seg", root=str(seg_root), image_size=SIZE)
    return data, SEG.load(data, "train"), SEG.load(data, "test")


@pytest.fixture(scope="module")
def trained(seg_data):
    """A student UNet trained a few epochs at 32 px: far from good, but its loss has a direction."""
    _, train, _ = seg_data
    torch.manual_seed(0)
    model = build_model("unet_student", 3, 1, SIZE)
    cfg = TrainSection(batch_size=32, lr=3e-3)
    opt = make_optimizer(model, cfg)
    for epoch in range(4):
        train_epoch(model, train.images, train.masks, opt, cfg, epoch=epoch, task=SEG)
    return model.eval()


def test_config_defaults_and_refusals():
    cfg = load_config(None, ["data.task=segmentation"])
    assert (cfg.model.name, cfg.distill.student, cfg.train.select, cfg.data.image_size) == \
        ("unet", "unet_student", "val_iou", 128)
    assert load_config(None, ["data.task=segmentation", "data.image_size=256"]).data.image_size == 256
    for bad, key in ((["data.image_size=100"], "data.image_size"), (["model.name=resnet18"], "model.name"),
                     (["train.select=val_auc"], "train.select"), (["partition.scheme=shards"], "partition.scheme"),
                     (["sweep.attacks=['square']"], "sweep.attacks"), (["train.class_weights=balanced"],
                                                                       "train.class_weights")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, ["data.task=segmentation", *bad])
    with pytest.raises(ConfigError, match=r"model\.name"):
        load_config(None, ["model.name=unet"])  # a classification config cannot take a segmenter


def test_partition_counts_images_not_pixels(seg_data):
    _, train, _ = seg_data
    parts = SEG.partition(train, PartitionSection(scheme="dirichlet", num_clients=5, alpha=0.5, min_samples=10), 0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(train)))  # N images, not N x H x W
    names, table = SEG.partition_table(train, parts)
    assert len(names) == 4 and table.sum() == len(train) and table.shape == (5, 4)


def test_paired_views_keep_mask_on_its_image():
    """An image whose red channel is its mask: after flip/rotation/crop the mask still covers the red pixels."""
    torch.manual_seed(0)
    masks = torch.zeros(8, 1, SIZE, SIZE)
    masks[:, :, 4:14, 6:24] = 1.0
    images = torch.cat([masks, torch.zeros(8, 2, SIZE, SIZE)], 1)
    aug = SEG.classic(["flip", "rotation", "crop", "jitter"], AugmentSection(rotation_degrees=30, crop_padding=4), SIZE)
    x, y = aug(images, masks)
    assert x.shape == images.shape and y.shape == masks.shape
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}  # masks stay binary
    assert not torch.equal(y, masks)  # something moved
    agree = ((x[:, :1] > 0.5).float() == y).float().mean()
    assert agree > 0.97  # only interpolated edge pixels may differ


def test_fgsm_raises_and_inverse_fgsm_lowers_the_pixel_loss(seg_data, trained):
    _, _, test = seg_data
    x, y, eps = test.images[:32], test.masks[:32], 0.03
    clean = float(SEG.loss(trained(x), y))
    up, down = fgsm(trained, x, y, eps, SEG.loss), invfgsm(trained, x, y, eps, SEG.loss)
    assert float(SEG.loss(trained(up), y)) > clean > float(SEG.loss(trained(down), y))
    for x_adv in (up, down):
        assert float((x_adv - x).abs().max()) <= eps + 1e-6 and 0 <= float(x_adv.min()) <= float(x_adv.max()) <= 1


def test_apgd_schedule_on_the_pixel_loss_and_the_mask_worst_case(seg_data, trained):
    """APGD's schedule on Dice + BCE is not weaker than PGD with the same gradient budget and stays in the
    ball; the sweep's autoattack for masks keeps, per image, an IoU no higher than each of its attacks."""
    from fedrobust.attacks import pgd
    from fedrobust.attacks.apgd_schedule import apgd_schedule, checkpoints
    from fedrobust.config import SweepSection
    from fedrobust.sweep.cells import Cell, craft
    from fedrobust.sweep.targets import Target

    assert sorted(checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]  # Croce & Hein's p_j
    _, _, test = seg_data
    x, y, eps = test.images[:8], test.masks[:8], 4 / 255
    g = torch.Generator().manual_seed(0)
    a = apgd_schedule(trained, x, y, eps, loss=SEG.loss, steps=10, generator=g)
    p = pgd(trained, x, y, eps, steps=10, loss=SEG.loss, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        per_image = [SEG.loss(trained(v), y, reduction="none") for v in (x, p, a)]
    assert float(per_image[2].mean()) >= float(per_image[1].mean()) > float(per_image[0].mean())
    assert float((a - x).abs().max()) <= eps + 1e-6 and 0 <= float(a.min()) <= float(a.max()) <= 1
    target, w, memo = Target("global", trained), SweepSection(pgd_steps=5, apgd_steps=10), {}
    worst, _ = craft(Cell("global", "autoattack", eps), target, trained, x, y, w, 0, SEG, memo)
    iou = {name: SEG.per_sample(trained(craft(Cell("global", name, eps), target, trained, x, y, w, 0, SEG, memo)[0])
                                .detach(), y) for name in SEG.worst_case(1)}
    floor = SEG.per_sample(trained(worst).detach(), y)
    assert all((floor <= v + 1e-9).all() for v in iou.values()) and floor.mean() < SEG.per_sample(
        trained(x).detach(), y).mean()


def test_metrics_chance_and_per_image_scores(seg_data):
    _, _, test = seg_data
    perfect = SEG.score(test.masks.numpy() * 8 - 4, test)
    assert perfect == pytest.approx({"iou": 1.0, "dice": 1.0, "miou": 1.0})
    everything = SEG.score(np.ones(tuple(test.masks.shape), dtype=np.float32), test)["iou"]
    assert SEG.chance(test) == everything  # all background scores 0: every Kvasir-SEG image has a polyp
    assert everything == pytest.approx(float(test.masks.mean((1, 2, 3)).mean()), abs=1e-6)  # IoU = polyp share
    inverted = SEG.score(4 - test.masks.numpy() * 8, test)
    assert inverted["iou"] == 0.0 and inverted["miou"] == 0.0
    assert np.allclose(SEG.per_sample(test.masks * 8 - 4, test.masks), 1.0)


def test_one_channel_distillation_term_does_not_vanish():
    s, t = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    assert float(soft_kl(s, t, 4.0)) > 0 and float(soft_kl(t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)
    y = (torch.rand(4, 1, 8, 8) > 0.5).float()
    assert float(distillation_loss(s, t, y, 4.0, 1.0, SEG.loss)) == pytest.approx(float(SEG.loss(s, y)))


def test_export_parity_checks_mask_pixels(tmp_path, seg_data, trained):
    from fedrobust.edge.metadata import ModelMetadata

    _, _, test = seg_data
    meta = ModelMetadata(dataset="kvasir-seg", task="segmentation", class_names=["background", "polyp"],
                         image_size=SIZE, channels=3, model="unet_student", role="student", precision="fp32",
                         weights_sha256="0" * 64, output_name="mask_logits")
    path = export_onnx(trained, tmp_path / "student.onnx", meta)
    parity, logits = check_parity(trained, path, test.images[:16], 1e-4, SEG.min_parity_agreement)
    assert logits.shape == (16, 1, SIZE, SIZE) and parity.agreement == 1.0
    other = build_model("unet_student", 3, 1, SIZE).eval()  # different weights: masks must disagree
    with pytest.raises(ExportError, match="agree"):
        check_parity(other, path, test.images[:16], 1e-4, SEG.min_parity_agreement)
    assert not path.exists()  # a failed export leaves no file


def _tiny(tmp_path, seg_root, *extra: str) -> list[str]:
    return ["--config", "configs/quickstart_seg.toml", "--data-root", str(seg_root),
            "--set", f"run.out_dir={tmp_path}", "--set", f"data.image_size={SIZE}",
            "--set", "partition.num_clients=2", "--set", "federation.rounds=2", "--set", "distill.epochs=1",
            "--set", "sweep.max_images=8", "--set", "sweep.eps=[0.1176]", "--set", "export.teacher=false",
            "--set", "sweep.attacks=['fgsm', 'transfer-fgsm']", "--set", "export.calibration_size=16",
            "--set", "sweep.corruptions=false", "--set", "federation.local_epochs=1",
            *[a for kv in extra for a in ("--set", kv)]]


@pytest.mark.slow
def test_federated_segmentation_through_ray_to_edge_and_report(tmp_path, seg_root, capsys):
    """Two hospitals, two rounds on the real Ray backend, then distillation, ONNX fp32/int8 and the IoU sweep."""
    assert main(["simulate", *_tiny(tmp_path, seg_root)]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    server = [r["server"] for r in rounds if r.get("round", 0) >= 1]
    assert len(server) == 2 and all({"iou", "dice", "miou", "fgsm_iou", "val_iou"} <= set(s) for s in server)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "segmentation" and 0 <= summary["test"]["iou"] <= 1
    export = json.loads((run / "export" / "summary.json").read_text())
    assert export["student"]["parity"]["agreement"] >= 0.999 and "iou" in export["student_int8"]["test"]
    with (run / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {"iou", "dice", "miou"} <= set(rows[0]) and "accuracy" not in rows[0]
    assert {r["target"] for r in rows} == {"global", "student", "onnx_fp32", "onnx_int8"}
    report = (run / "report.md").read_text()
    assert "Polyp IoU by attack" in report and (run / "plots" / "examples.png").is_file()
    assert "IoU" in capsys.readouterr().out
    out = tmp_path / "compare" / "student.md"
    assert main(["report", str(run), "--target", "student", "--attack", "fgsm", "--out", str(out)]) == 0
    assert "(polyp IoU)" in out.read_text() and out.with_suffix(".png").is_file()


@pytest.mark.parametrize(("mode", "fused"), [(m, False) for m in ("fgsm", "invfgsm", "both", "pgd")]
                         + [(m, True) for m in ("fgsm", "invfgsm", "both")])  # fused takes the one-step modes
def test_adversarial_augmentation_on_masks(mode, fused):
    """Every augment mode builds mask batches: each copy keeps its own mask and stays within eps of its image."""
    from fedrobust.augment import AdversarialPolicy

    torch.manual_seed(0)
    model = build_model("unet_student", 3, 1, 16).eval()
    x, y = torch.rand(6, 3, 16, 16), (torch.rand(6, 1, 16, 16) > 0.5).float()
    cfg = AugmentSection(mode=mode, eps=0.02, fraction=0.5, fused=fused, pgd_steps=2)
    policy = AdversarialPolicy(cfg, torch.Generator().manual_seed(1), SEG.loss)
    idx = AdversarialPolicy(cfg, torch.Generator().manual_seed(1)).pick(len(x))  # the twin picks the same samples
    grad = None
    if fused:
        xg = x.clone().requires_grad_(True)
        SEG.loss(model(xg), y, reduction="sum").backward()
        grad = xg.grad
    batch = policy.augment(model, x, y, input_grad=grad)
    copies = 2 if mode == "both" else 1
    adv_x, adv_y = (batch.x, batch.y) if fused else (batch.x[len(x):], batch.y[len(x):])
    assert batch.n_adv == len(adv_x) == copies * len(idx)
    assert torch.equal(adv_y, torch.cat([y[idx]] * copies))
    assert float((adv_x - torch.cat([x[idx]] * copies)).abs().max()) <= 0.02 + 1e-6


def test_partition_command_prints_the_polyp_size_table(seg_root, capsys):
    from fedrobust.cli import main as core_main

    assert core_main(["partition", "--task", "segmentation", "--data-root", str(seg_root), "--clients", "5",
                      "--scheme", "dirichlet", "--alpha", "0.5", "--min-samples", "10"]) == 0
    out = capsys.readouterr().out
    assert "kvasir-seg train split, 818 samples" in out and "smallest polyps" in out
    assert out.strip().splitlines()[-1].split()[-1] == "818"  # every training image exactly once
    assert core_main(["partition", "--task", "segmentation", "--data-root", str(seg_root), "--scheme",
                      "shards"]) == 2
    assert "--scheme shards: segmentation partitions by iid, quantity, dirichlet" in capsys.readouterr().err


def test_the_launcher_passes_the_tasks_own_root_on(monkeypatch, tmp_path):
    from launcher.simulation import absolute_data_root

    monkeypatch.setenv("FEDROBUST_DATA_ROOT", str(tmp_path / "medmnist"))
    monkeypatch.setenv("FEDROBUST_SEG_ROOT", str(tmp_path / "seg"))
    assert absolute_data_root(load_config(None, ["data.task=segmentation"])) == str(tmp_path / "seg")
    assert absolute_data_root(load_config(None)) == str(tmp_path / "medmnist")
    assert absolute_data_root(load_config(None, [f"data.root='{tmp_path}/x'"])) == str(tmp_path / "x")
