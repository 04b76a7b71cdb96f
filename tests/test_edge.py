"""The edge runtime on tiny hand-built ONNX models: real onnxruntime, known answers, every user error.

The models are built here with onnx.helper (onnx is fine in tests, never in the runtime):
- grey, 2 classes: logits = (10 m, 10 - 10 m) with m the image's mean pixel, so a white image is
  class 0 ("bright") and p0 = sigmoid(20 m - 10) exactly;
- RGB, 3 classes: logits = 10 x the per-channel means, so a pure red image is class 0 ("red"), and
  a channel mix-up (BGR, channels-last) shows as a wrong class.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from fedrobust.edge.images import EdgeError, load_image, load_npz, npz_images_key
from fedrobust.edge.metadata import ModelMetadata
from fedrobust.edge.model import EdgeModel
from fedrobust.edge.scores import softmax

REPO = Path(__file__).resolve().parents[1]
SIZE = 28
GREY_CLASSES = ["bright", "dark"]
RGB_CLASSES = ["red", "green", "blue"]


def _meta(channels: int, classes: list[str], **overrides: object) -> ModelMetadata:
    fields: dict = dict(dataset="toymnist", task="binary-class" if len(classes) == 2 else "multi-class",
                        class_names=classes, image_size=SIZE, channels=channels, model="toy", role="student",
                        precision="fp32", weights_sha256="0" * 64)
    fields.update(overrides)
    return ModelMetadata(**fields)


def _graph(channels: int) -> onnx.GraphProto:
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", channels, SIZE, SIZE])
    if channels == 1:
        logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
        nodes = [
            helper.make_node("ReduceMean", ["images"], ["mean4"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Flatten", ["mean4"], ["mean"], axis=1),
            helper.make_node("Gemm", ["mean", "w", "b"], ["logits"]),
        ]
        inits = [helper.make_tensor("w", TensorProto.FLOAT, [1, 2], [10.0, -10.0]),
                 helper.make_tensor("b", TensorProto.FLOAT, [2], [0.0, 10.0])]
    else:
        logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
        nodes = [
            helper.make_node("ReduceMean", ["images"], ["mean"], axes=[2, 3], keepdims=0),
            helper.make_node("Mul", ["mean", "ten"], ["logits"]),
        ]
        inits = [helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0])]
    return helper.make_graph(nodes, f"toy{channels}", [images], [logits], initializer=inits)


def write_model(path: Path, channels: int, meta: ModelMetadata | None) -> Path:
    model = helper.make_model(_graph(channels), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if meta is not None:
        helper.set_model_props(model, meta.to_props())
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "grey": write_model(root / "grey.onnx", 1, _meta(1, GREY_CLASSES)),
        "rgb": write_model(root / "rgb.onnx", 3, _meta(3, RGB_CLASSES)),
        "nometa": write_model(root / "nometa.onnx", 1, None),
        "badname": write_model(root / "badname.onnx", 1, _meta(1, GREY_CLASSES, input_name="pixels")),
        "badsize": write_model(root / "badsize.onnx", 1, _meta(1, GREY_CLASSES, image_size=64)),
    }


@pytest.fixture(scope="module")
def grey(models: dict[str, Path]) -> EdgeModel:
    return EdgeModel(models["grey"])


@pytest.fixture(scope="module")
def rgb(models: dict[str, Path]) -> EdgeModel:
    return EdgeModel(models["rgb"])


def constant(values: list[float], channels: int = 1) -> np.ndarray:
    return np.stack([np.full((channels, SIZE, SIZE), v, dtype=np.float32) for v in values])


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fedrobust.edge.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60)


# ---------------------------------------------------------------------------------------- arrays


def test_predict_known_answers(grey: EdgeModel) -> None:
    m = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    x = constant(list(m))
    np.testing.assert_allclose(grey.predict_logits(x), np.stack([10 * m, 10 - 10 * m], axis=1), atol=1e-5)
    labels, proba = grey.predict(x)
    np.testing.assert_allclose(proba[:, 0], sigmoid(20 * m - 10), atol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert labels.tolist() == [1, 1, 0, 0, 0]  # 0.5 is a tie: argmax takes the first class
    assert grey.metadata.class_names == GREY_CLASSES
    assert grey.predict_proba(x[:0]).shape == (0, 2)


def test_rgb_channel_order(rgb: EdgeModel) -> None:
    x = np.zeros((3, 3, SIZE, SIZE), dtype=np.float32)
    for i in range(3):
        x[i, i] = 1.0
    labels, proba = rgb.predict(x)
    assert labels.tolist() == [0, 1, 2]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_batching_does_not_change_results(grey: EdgeModel) -> None:
    x = np.random.default_rng(0).random((37, 1, SIZE, SIZE), dtype=np.float32)
    whole = grey.predict_logits(x, batch_size=256)
    np.testing.assert_allclose(grey.predict_logits(x, batch_size=5), whole, atol=1e-6)
    np.testing.assert_allclose(grey.predict_logits(x[::2], batch_size=4), whole[::2], atol=1e-6)  # strided view


def test_softmax_is_stable() -> None:
    p = softmax(np.array([[1000.0, 0.0], [-1000.0, -1000.0]], dtype=np.float32))
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.5, 0.5]])


def _bad_inputs() -> list[tuple[object, tuple[str, ...]]]:
    ok = constant([0.5])
    nan, big = ok.copy(), ok.copy()
    nan[0, 0, 3, 3] = np.nan
    big[0, 0, 0, 0] = 1.5
    return [
        (ok[0], ("shape", "x[None]")),  # (C, H, W): forgot the batch axis
        (np.zeros((2, SIZE, SIZE), np.float32), ("shape", "x[:, None]")),
        (ok.astype(np.int64), ("float32", "int64", "/ 255")),
        (ok.astype(np.float64), ("float32", "float64", "astype")),
        (ok.tolist(), ("numpy array", "list")),
        (constant([0.5], channels=3), ("1 channel", "grey", "3")),
        (np.zeros((1, SIZE, SIZE, 1), np.float32), ("channels last", "transpose")),
        (np.zeros((1, 1, 32, 32), np.float32), ("28x28", "32x32", "resize")),
        (big, ("[0, 1]", "1.5")),
        (ok - 1.0, ("[0, 1]", "-0.5")),
        (nan, ("NaN",)),
    ]


@pytest.mark.parametrize(("x", "words"), _bad_inputs())
def test_bad_arrays_are_clear_errors(grey: EdgeModel, x: object, words: tuple[str, ...]) -> None:
    with pytest.raises(EdgeError) as info:
        grey.predict(x)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_bad_batch_size(grey: EdgeModel) -> None:
    with pytest.raises(EdgeError, match="batch_size"):
        grey.predict(constant([0.5]), batch_size=0)


# ---------------------------------------------------------------------------------------- images


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_load_image_grey_rgb_and_conversion(tmp_path: Path, grey: EdgeModel, rgb: EdgeModel) -> None:
    white = save(tmp_path / "white.png", np.full((SIZE, SIZE), 255, np.uint8))
    x = load_image(white, 1, SIZE)
    assert x.shape == (1, SIZE, SIZE) and x.dtype == np.float32 and x.min() == 1.0
    assert grey.predict(x[None]).labels.tolist() == [0]

    red = np.zeros((SIZE, SIZE, 3), np.uint8)
    red[..., 0] = 255
    red_png = save(tmp_path / "red.png", red)
    as_rgb = load_image(red_png, 3, SIZE)
    assert as_rgb.shape == (3, SIZE, SIZE)
    assert rgb.predict(as_rgb[None]).labels.tolist() == [0]  # channels first, R first
    as_grey = load_image(red_png, 1, SIZE)  # RGB file into a grey model: converted with Pillow's luma
    assert as_grey.shape == (1, SIZE, SIZE)
    np.testing.assert_allclose(as_grey, 76 / 255, atol=1 / 255)
    assert grey.predict(as_grey[None]).labels.tolist() == [1]

    grey_png = save(tmp_path / "grey.png", np.full((SIZE, SIZE), 128, np.uint8))
    three = load_image(grey_png, 3, SIZE)  # grey file into an RGB model: replicated
    assert three.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(rgb.predict_proba(three[None]), 1 / 3, atol=1e-6)


def test_load_image_resizes_like_training(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    ramp[::7] = 0  # fine detail that only an antialiased filter averages away smoothly
    x = load_image(save(tmp_path / "ramp.png", ramp), 1, SIZE)
    assert x.shape == (1, SIZE, SIZE) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.interpolate(torch.from_numpy(ramp).float().div(255)[None, None], size=(SIZE, SIZE),
                                          mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    np.testing.assert_allclose(x, ref[0].numpy(), atol=1e-4)
    up = load_image(save(tmp_path / "small.png", ramp[:14, :14]), 1, SIZE)  # upscaling works too
    assert up.shape == (1, SIZE, SIZE)


def test_load_image_16_bit(tmp_path: Path) -> None:
    path = save(tmp_path / "deep.png", np.full((SIZE, SIZE), 65535, np.uint16))
    np.testing.assert_allclose(load_image(path, 1, SIZE), 1.0)  # scaled, not clipped at 255/65535


def test_load_image_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    with pytest.raises(EdgeError, match=r"notes\.png is not a readable image"):
        load_image(text, 1, SIZE)
    with pytest.raises(EdgeError, match="no such image file"):
        load_image(tmp_path / "missing.png", 1, SIZE)


# ------------------------------------------------------------------------------------------- npz


def medmnist_npz(path: Path, n: int = 6, rgb: bool = False) -> tuple[Path, np.ndarray]:
    """MedMNIST layout: uint8 (N, H, W[, 3]) images, (N, 1) labels. Half white (class 0), half black."""
    shape = (n, SIZE, SIZE, 3) if rgb else (n, SIZE, SIZE)
    images = np.zeros(shape, np.uint8)
    images[: n // 2] = 255
    labels = np.array([0] * (n // 2) + [1] * (n - n // 2), np.uint8).reshape(-1, 1)
    labels[-1] = 0  # one deliberate mistake: accuracy (n - 1) / n
    np.savez_compressed(path, train_images=images[:1], train_labels=labels[:1], test_images=images,
                        test_labels=labels)
    return path, labels[:, 0]


def test_load_npz_layouts(tmp_path: Path) -> None:
    path, _ = medmnist_npz(tmp_path / "toy.npz")
    assert npz_images_key(path) == "test_images"
    x = load_npz(path, channels=1, size=SIZE)
    assert x.shape == (6, 1, SIZE, SIZE) and x.dtype == np.float32
    assert x[0].min() == 1.0 and x[-1].max() == 0.0
    assert load_npz(path, "train_images", channels=1, size=SIZE, limit=5).shape == (1, 1, SIZE, SIZE)
    assert load_npz(path, channels=1, size=SIZE, limit=2).shape == (2, 1, SIZE, SIZE)

    nhwc = np.zeros((2, SIZE, SIZE, 3), np.float32)
    nhwc[0, ..., 2] = 1.0
    np.savez(tmp_path / "rgb.npz", data=nhwc)  # the only array: used whatever its name
    x = load_npz(tmp_path / "rgb.npz", channels=3, size=SIZE)
    assert x.shape == (2, 3, SIZE, SIZE) and x[0, 2].min() == 1.0 and x[0, :2].max() == 0.0
    np.savez(tmp_path / "nchw.npz", images=nhwc.transpose(0, 3, 1, 2).astype(np.float16))
    np.testing.assert_array_equal(load_npz(tmp_path / "nchw.npz", channels=3, size=SIZE), x)


@pytest.mark.parametrize(("arrays", "kwargs", "words"), [
    ({"images": np.linspace(0, 2, 2 * SIZE * SIZE).reshape(2, SIZE, SIZE)}, {}, ("float", "0 to 2", "[0, 1]")),
    ({"images": np.full((2, SIZE, SIZE), -0.1, np.float32)}, {}, ("[0, 1]",)),
    ({"images": np.full((2, SIZE, SIZE), np.nan)}, {}, ("NaN",)),
    ({"images": np.zeros((2, SIZE, SIZE), np.int64)}, {}, ("dtype int64", "uint8")),
    ({"a": np.zeros((2, SIZE, SIZE), np.uint8), "b": np.zeros(2)}, {}, ("--key", "a, b")),
    ({"images": np.zeros((2, SIZE, SIZE), np.uint8)}, {"key": "pics"}, ("no array 'pics'", "images")),
    ({"images": np.zeros((2, 64, 64), np.uint8)}, {}, ("28x28", "64x64", "resize")),
    ({"images": np.zeros((2, SIZE, SIZE, 3), np.uint8)}, {}, ("1 channel (grey)", "has 3")),
    ({"images": np.zeros((2, 5, SIZE, SIZE), np.uint8)}, {}, ("channel axis",)),
    ({"images": np.zeros((0, SIZE, SIZE), np.uint8)}, {}, ("no images",)),
])
def test_load_npz_errors(tmp_path: Path, arrays: dict, kwargs: dict, words: tuple[str, ...]) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(EdgeError) as info:
        load_npz(path, channels=1, size=SIZE, **kwargs)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_load_npz_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "fake.npz"
    path.write_text("hello\n")
    with pytest.raises(EdgeError, match="not a readable npz"):
        load_npz(path, channels=1, size=SIZE)
    np.save(tmp_path / "plain.npy", np.zeros((1, SIZE, SIZE), np.uint8))
    with pytest.raises(EdgeError, match="not an npz archive"):
        load_npz(tmp_path / "plain.npy", channels=1, size=SIZE)
    with pytest.raises(EdgeError, match="no such npz file"):
        load_npz(tmp_path / "missing.npz", channels=1, size=SIZE)


# ------------------------------------------------------------------------------------------ model


def test_model_file_errors(tmp_path: Path, models: dict[str, Path]) -> None:
    with pytest.raises(EdgeError, match="no such model file"):
        EdgeModel(tmp_path / "missing.onnx")
    fake = tmp_path / "fake.onnx"
    fake.write_text("definitely not protobuf\n")
    with pytest.raises(EdgeError, match="is not a valid ONNX model"):
        EdgeModel(fake)
    with pytest.raises(EdgeError, match="no fedrobust metadata"):
        EdgeModel(models["nometa"])
    with pytest.raises(EdgeError, match=r"'pixels'.*images"):
        EdgeModel(models["badname"])
    with pytest.raises(EdgeError, match="metadata says"):
        EdgeModel(models["badsize"])
    with pytest.raises(EdgeError, match="threads"):
        EdgeModel(models["grey"], threads=-1)


def test_session_is_configured_for_the_edge(models: dict[str, Path]) -> None:
    model = EdgeModel(models["grey"], threads=0)  # 0: onnxruntime chooses
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    info = model.io_info()
    assert info["inputs"] == [{"name": "images", "type": "tensor(float)", "shape": ["N", 1, SIZE, SIZE]}]
    assert info["outputs"][0]["name"] == "logits"
    assert "toymnist" in repr(model)


# -------------------------------------------------------------------------------------------- CLI


def test_fresh_interpreter_has_no_torch_and_cli_predicts(tmp_path: Path, models: dict[str, Path]) -> None:
    check = ("import sys, fedrobust.edge.cli, fedrobust.edge.model, fedrobust.edge.images; "
             "bad = [m for m in ('torch', 'torchvision', 'flwr', 'onnx') if m in sys.modules]; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 0, done.stderr

    white = save(tmp_path / "white.png", np.full((56, 56), 255, np.uint8))  # resized to 28 on the way
    black = save(tmp_path / "black.png", np.zeros((SIZE, SIZE, 3), np.uint8))  # RGB into a grey model
    done = run_cli("predict", str(models["grey"]), str(white), str(black), "--batch-size", "1")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["dataset"] == "toymnist" and out["precision"] == "fp32" and out["model"] == str(models["grey"])
    preds = out["predictions"]
    assert [p["input"] for p in preds] == [str(white), str(black)]
    assert [(p["label"], p["class"]) for p in preds] == [(0, "bright"), (1, "dark")]
    assert list(preds[0]["probabilities"]) == GREY_CLASSES
    assert preds[0]["probabilities"]["bright"] == pytest.approx(sigmoid(10.0), abs=1e-6)
    assert "accuracy" not in out


def test_cli_npz_accuracy_and_top(tmp_path: Path, models: dict[str, Path]) -> None:
    path, _ = medmnist_npz(tmp_path / "toymnist.npz", rgb=True)
    done = run_cli("predict", str(models["rgb"]), "--npz", str(path), "--top", "1", "--limit", "4")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["npz_key"] == "test_images" and len(out["predictions"]) == 4
    assert out["predictions"][0]["input"] == f"{path}[0]"
    assert all(len(p["probabilities"]) == 1 for p in out["predictions"])
    # white (equal RGB) images tie -> "red" (0); black ones too; labels are 0, 0, 0, 1 -> 3/4
    assert out["accuracy"] == pytest.approx(0.75)
    assert [p["true_label"] for p in out["predictions"]] == [0, 0, 0, 1]

    path, _ = medmnist_npz(tmp_path / "grey.npz")
    out = json.loads(run_cli("predict", str(models["grey"]), "--npz", str(path)).stdout)
    assert [p["label"] for p in out["predictions"]] == [0, 0, 0, 1, 1, 1]
    assert out["accuracy"] == pytest.approx(5 / 6)

    info = run_cli("info", str(models["grey"]))
    assert info.returncode == 0, info.stderr
    meta = json.loads(info.stdout)
    assert meta["metadata"]["class_names"] == GREY_CLASSES and meta["num_classes"] == 2
    assert meta["inputs"][0]["shape"] == ["N", 1, SIZE, SIZE]


def test_cli_user_errors_are_one_line(tmp_path: Path, models: dict[str, Path]) -> None:
    png = save(tmp_path / "x.png", np.zeros((SIZE, SIZE), np.uint8))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    npz = tmp_path / "labels.npz"
    np.savez(npz, images=np.zeros((2, SIZE, SIZE), np.uint8), labels=np.array([0, 7]))
    model = str(models["grey"])
    cases = [
        (("predict", str(tmp_path / "missing.onnx"), str(png)), "no such model file"),
        (("predict", str(text), str(png)), "not a valid ONNX model"),
        (("predict", str(models["nometa"]), str(png)), "no fedrobust metadata"),
        (("predict", model), "either IMAGE files or --npz"),
        (("predict", model, str(png), "--npz", str(npz)), "not both"),
        (("predict", model, str(png), "--limit", "3"), "only apply with --npz"),
        (("predict", model, str(text)), "not a readable image"),
        (("predict", model, "--npz", str(npz)), "right file"),
        (("predict", model, str(png), "--top", "0"), "positive integer"),
        (("predict", model, str(png), "--bogus"), "unrecognized arguments"),
        (("info",), "required"),
    ]
    for args, words in cases:
        done = run_cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("fedrobust-edge: error:"), (args, done.stderr)
        assert words in lines[0], (args, lines[0])
        assert done.stdout == ""


def test_cli_help_has_examples() -> None:
    done = run_cli("predict", "--help")
    assert done.returncode == 0 and "--npz" in done.stdout and "examples:" in done.stdout


def test_as_8bit_is_what_an_8bit_png_decodes_to(tmp_path):
    """The sweep's delivered view equals writing the adversarial image as a PNG and reading it back with the
    edge runtime's own decoder."""
    from PIL import Image

    from fedrobust.edge.images import as_8bit, load_image

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(1, 28, 28)).astype(np.float32)
    path = tmp_path / "adv.png"
    Image.fromarray(np.rint(x[0] * 255).astype(np.uint8), mode="L").save(path)
    assert np.array_equal(as_8bit(x), load_image(path, channels=1, size=28))
    assert np.abs(as_8bit(x) - x).max() <= 0.5 / 255 + 1e-7
