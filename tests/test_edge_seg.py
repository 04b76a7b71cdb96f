"""The edge runtime on a segmentation model: masks, PNG files, IoU / Dice, and the CLI around them.

One tiny MONAI UNet is exported with fedrobust's own exporter (torch is fine in tests, never in
fedrobust.edge). Its threshold is then set to the median logit of a test batch, so the masks are
neither empty nor full and a runtime that ignored ``metadata.threshold`` would show.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from fedrobust.edge.cli import main
from fedrobust.edge.images import EdgeError, load_image
from fedrobust.edge.masks import iou_dice, iou_dice_per_image, load_mask, masks_of, sigmoid
from fedrobust.edge.metadata import PREFIX, ModelMetadata
from fedrobust.edge.model import EdgeModel

REPO = Path(__file__).resolve().parents[1]
SIZE = 32


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fedrobust.export.onnx_export import export_onnx
    from fedrobust.models.registry import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seg") / "unet.onnx"
    meta = ModelMetadata(dataset="kvasir-seg", task="segmentation", class_names=["background", "polyp"],
                         image_size=SIZE, channels=3, model="unet_student", role="student", precision="fp32",
                         weights_sha256="0" * 64, output_name="mask_logits")
    export_onnx(build_model("unet_student", 3, 1, SIZE), path, meta)
    logits = EdgeModel(path).predict_logits(_images(4))
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == PREFIX + "threshold":
            prop.value = json.dumps(float(np.median(logits)))
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def model(seg_model: Path) -> EdgeModel:
    return EdgeModel(seg_model)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, SIZE, SIZE), dtype=np.float32)


def _uint8_rgb(n: int, size: int = SIZE, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _expected_masks(model: EdgeModel, x: np.ndarray) -> np.ndarray:
    return model.predict_logits(x)[:, 0] > model.metadata.threshold


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict | None, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out else None), captured.err


def _png(path: str | Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


# ------------------------------------------------------------------------------------------- library


def test_masks_of_uses_the_threshold(model: EdgeModel) -> None:
    x = _images(3, seed=5)
    masks, proba = masks_of(model, x)
    assert model.metadata.is_mask and model.metadata.threshold != 0.0
    assert masks.shape == proba.shape == (3, SIZE, SIZE) and masks.dtype == bool and proba.dtype == np.float32
    np.testing.assert_array_equal(masks, _expected_masks(model, x))
    assert 0 < masks.mean() < 1
    np.testing.assert_allclose(proba, sigmoid(model.predict_logits(x)[:, 0]), rtol=1e-6)


def test_sigmoid_is_stable() -> None:
    p = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, [0.0, 0.5, 1.0])


def test_iou_dice_known_answers() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((4, 8, 8)) > 0.5
    assert iou_dice(masks, masks) == (1.0, 1.0)
    assert iou_dice(masks, ~masks) == (0.0, 0.0)
    empty = np.zeros((1, 8, 8), bool)
    one = empty.copy()
    one[0, 0, 0] = True
    two = one.copy()
    two[0, 0, 1] = True
    assert iou_dice(empty, empty) == (1.0, 1.0)  # nothing to find, nothing found (MONAI ignore_empty=False)
    assert iou_dice(one, empty) == (0.0, 0.0)
    iou, dice = iou_dice_per_image(two, one[:, None])  # (N, 1, H, W) accepted too
    np.testing.assert_allclose([iou[0], dice[0]], [0.5, 2 / 3])
    with pytest.raises(EdgeError, match="must both be"):
        iou_dice(masks, masks[:, :4])


def test_iou_dice_match_monai() -> None:
    from monai.metrics import compute_dice, compute_iou

    rng = np.random.default_rng(1)
    pred, true = rng.random((6, 16, 16)) > 0.6, rng.random((6, 16, 16)) > 0.7
    true[0] = pred[0] = False
    true[1] = False
    iou, dice = iou_dice_per_image(pred, true)
    p, t = torch.from_numpy(pred[:, None]).float(), torch.from_numpy(true[:, None]).float()
    np.testing.assert_allclose(iou, compute_iou(p, t, ignore_empty=False)[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(dice, compute_dice(p, t, ignore_empty=False)[:, 0].numpy(), atol=1e-6)


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_writes_masks_and_overlays(tmp_path: Path, seg_model: Path, model: EdgeModel,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    pixels = _uint8_rgb(2)
    first = tmp_path / "first.png"
    Image.fromarray(pixels[0]).save(first)
    second = tmp_path / "second.jpg"  # another size: resized to the model's, like classification inputs
    Image.fromarray(np.asarray(Image.fromarray(pixels[1]).resize((48, 40)))).save(second)
    out_dir = tmp_path / "out" / "nested"
    code, out, err = run(capsys, "predict", str(seg_model), str(first), str(second), "--out", str(out_dir))
    assert code == 0, err
    assert out["task"] == "segmentation" and out["threshold"] == model.metadata.threshold
    assert "iou" not in out
    x = np.stack([load_image(f, 3, SIZE) for f in (first, second)])
    expected = _expected_masks(model, x)
    for i, (entry, path, want) in enumerate(zip(out["predictions"], (first, second), expected, strict=True)):
        assert entry["file"] == str(path)
        assert entry["mask"] == str(out_dir / f"{path.stem}.mask.png")
        assert entry["overlay"] == str(out_dir / f"{path.stem}.overlay.png")
        mask = _png(entry["mask"])
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, want)
        assert entry["foreground_fraction"] == pytest.approx((mask == 255).mean(), abs=1e-6)
        overlay = _png(entry["overlay"])
        assert overlay.shape == (SIZE, SIZE, 3)
        image = np.rint(x[i].transpose(1, 2, 0) * 255).astype(int)
        np.testing.assert_array_equal(overlay[~want], image[~want])  # the input itself outside the mask
        assert (overlay[want, 0] >= image[want, 0]).all() and (overlay[want, 1:] <= image[want, 1:]).all()  # red
        if want.any():
            assert entry["mean_polyp_probability"] > sigmoid(np.array(model.metadata.threshold)) - 1e-6
        else:
            assert entry["mean_polyp_probability"] is None
    info = json.loads(_info(capsys, seg_model))
    assert info["metadata"]["task"] == "segmentation" and "threshold" in info["metadata"]


def _info(capsys: pytest.CaptureFixture[str], path: Path) -> str:
    assert main(["info", str(path)]) == 0
    return capsys.readouterr().out


def test_cli_npz_scores_iou_and_dice(tmp_path: Path, seg_model: Path, model: EdgeModel,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    images = _uint8_rgb(5, seed=2)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    predicted = _expected_masks(model, x)
    truth = predicted.copy()
    truth[2:] = np.random.default_rng(3).random((3, SIZE, SIZE)) > 0.5  # two perfect images, three not
    npz = tmp_path / "kvasir.npz"
    np.savez(npz, test_images=images, test_masks=(truth * 255).astype(np.uint8)[:, None])  # N,1,H,W of 0/255
    code, out, err = run(capsys, "predict", str(seg_model), "--npz", str(npz), "--out", str(tmp_path / "o"))
    assert code == 0, err
    iou, dice = iou_dice(predicted, truth)
    assert out["npz_key"] == "test_images"
    assert out["iou"] == pytest.approx(iou, abs=1e-6) and out["dice"] == pytest.approx(dice, abs=1e-6)
    assert [p["iou"] for p in out["predictions"][:2]] == [1.0, 1.0]
    assert sorted(p.name for p in (tmp_path / "o").iterdir())[:2] == ["kvasir_0.mask.png", "kvasir_0.overlay.png"]

    np.savez(npz, images=images, masks=truth.astype(np.uint8))  # N,H,W of 0/1, and --limit
    code, out, err = run(capsys, "predict", str(seg_model), "--npz", str(npz), "--limit", "2",
                         "--out", str(tmp_path / "lim"))
    assert code == 0, err
    assert out["iou"] == 1.0 and out["dice"] == 1.0 and len(out["predictions"]) == 2
    assert len(list((tmp_path / "lim").iterdir())) == 4


def test_cli_folder_scores_iou_and_dice(tmp_path: Path, seg_model: Path, model: EdgeModel,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "Kvasir-SEG"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(4)
    for i, pixels in enumerate(_uint8_rgb(3, size=64, seed=4)):
        Image.fromarray(pixels).save(folder / "images" / f"p{i}.jpg")
        Image.fromarray(np.where(rng.random((64, 64)) > 0.5, 255, 0).astype(np.uint8)).save(
            folder / "masks" / f"p{i}.png")
    code, out, err = run(capsys, "predict", str(seg_model), "--folder", str(folder), "--out", str(tmp_path / "o"))
    assert code == 0, err
    stems = [f"p{i}" for i in range(3)]
    x = np.stack([load_image(folder / "images" / f"{s}.jpg", 3, SIZE) for s in stems])
    truth = np.stack([load_mask(folder / "masks" / f"{s}.png", SIZE) for s in stems])
    iou, dice = iou_dice(_expected_masks(model, x), truth)
    assert out["iou"] == pytest.approx(iou, abs=1e-6) and out["dice"] == pytest.approx(dice, abs=1e-6)
    assert [Path(p["mask"]).name for p in out["predictions"]] == [f"{s}.mask.png" for s in stems]

    (folder / "masks" / "p1.png").unlink()
    code, _, err = run(capsys, "predict", str(seg_model), "--folder", str(folder), "--out", str(tmp_path / "o"))
    assert code == 2 and "p1.jpg has no namesake" in err


def test_cli_segmentation_user_errors_are_one_line(tmp_path: Path, seg_model: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "x.png"
    Image.fromarray(_uint8_rgb(1)[0]).save(png)
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=_uint8_rgb(2), masks=np.full((2, SIZE, SIZE), 7, np.uint8))
    small = tmp_path / "small.npz"
    np.savez(small, images=_uint8_rgb(2), masks=np.zeros((2, 16, 16), np.uint8))
    (tmp_path / "other").mkdir()
    Image.fromarray(_uint8_rgb(1)[0]).save(tmp_path / "other" / "x.jpg")
    model = str(seg_model)
    out = ("--out", str(tmp_path / "o"))
    cases = [
        (("predict", model, str(png)), "pass --out DIR"),
        (("predict", model, str(png), "--out", str(afile)), "is a file"),
        (("predict", model, "--npz", str(bad), *out), "not only 0/1 or 0/255"),
        (("predict", model, "--npz", str(small), *out), "expected masks of the images' size"),
        (("predict", model, str(png), str(tmp_path / "other" / "x.jpg"), *out), "same x.mask.png"),
        (("predict", model, str(png), "--top", "1", *out), "--top only applies"),
        (("predict", model, "--folder", str(tmp_path / "nowhere"), *out), "no such folder"),
        (("predict", model, str(png), "--folder", str(tmp_path), *out), "not both"),
    ]
    for args, words in cases:
        code, result, err = run(capsys, *args)
        assert code == 2 and result is None, (args, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("fedrobust-edge: error:"), (args, err)
        assert words in lines[0], (args, lines[0])


def test_classifier_refuses_segmentation_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from onnx import TensorProto, helper

    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["images"], ["logits"], axes=[2, 3], keepdims=0)],
                              "rgb", [images], [logits])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    meta = ModelMetadata(dataset="toymnist", task="multi-class", class_names=["r", "g", "b"], image_size=SIZE,
                         channels=3, model="toy", role="student", precision="fp32", weights_sha256="0" * 64)
    helper.set_model_props(proto, meta.to_props())
    onnx.save(proto, tmp_path / "rgb.onnx")
    png = tmp_path / "x.png"
    Image.fromarray(_uint8_rgb(1)[0]).save(png)
    code, out, err = run(capsys, "predict", str(tmp_path / "rgb.onnx"), str(png))
    assert code == 0 and len(out["predictions"][0]["probabilities"]) == 3, err
    code, _, err = run(capsys, "predict", str(tmp_path / "rgb.onnx"), str(png), "--out", str(tmp_path / "o"))
    assert code == 2 and "only apply to segmentation models" in err


def test_edge_package_never_imports_torch() -> None:
    """Every import in fedrobust/edge/*.py, top-level or inside functions: no torch (nor fedrobust modules
    outside the edge package, which may pull it in)."""
    for path in sorted((REPO / "fedrobust" / "edge").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert name.split(".")[0] not in ("torch", "torchvision", "monai"), f"{path.name} imports {name}"
                assert not name.startswith("fedrobust.") or name.startswith("fedrobust.edge"), \
                    f"{path.name} imports {name}"
